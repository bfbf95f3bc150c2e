"""Paired metrics: L1, PSNR, SSIM."""

import math

import numpy as np
import pytest

from spade.errors import UserError
from spade.metrics.paired import PSNR_CAP_DB, paired_metrics, worse_than_rough


def images(n: int = 5, size: int = 32, high: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, (n, size, size, 3), dtype=np.uint8)


def test_identical_images():
    x = images()
    m = paired_metrics(x, x.copy())
    assert m["l1"] == 0.0
    assert m["psnr"] == PSNR_CAP_DB
    assert m["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_constant_offset():
    target = images(high=200)
    pred = target + np.uint8(10)
    m = paired_metrics(pred, target)
    assert m["l1"] == pytest.approx(10 / 255, rel=1e-9)
    assert m["psnr"] == pytest.approx(20 * math.log10(255 / 10), rel=1e-9)
    assert 0.5 < m["ssim"] < 1.0


def test_batching_does_not_change_result():
    a, b = images(7, seed=1), images(7, seed=2)
    whole = paired_metrics(a, b, batch_size=64)
    chunked = paired_metrics(a, b, batch_size=3)
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, rel=1e-6)
    assert whole["ssim"] < 0.2  # independent noise


def test_bad_inputs():
    with pytest.raises(UserError, match="shapes differ"):
        paired_metrics(images(4), images(5))
    with pytest.raises(UserError, match="uint8"):
        paired_metrics(images().astype(np.float32), images())
    with pytest.raises(UserError):
        paired_metrics(images(size=8), images(size=8))


def test_reads_memmap(tmp_path):
    a, b = images(6, seed=3), images(6, seed=4)
    np.save(tmp_path / "a.npy", a)
    from_disk = paired_metrics(np.load(tmp_path / "a.npy", mmap_mode="r"), b, batch_size=4)
    assert from_disk == pytest.approx(paired_metrics(a, b))


@pytest.mark.parametrize("section", ["train", "distill"])
def test_worse_than_rough_names_the_section_that_trained_the_model(section, caplog):
    assert worse_than_rough(0.5, 0.4, section) and not worse_than_rough(0.3, 0.4, section)
    assert f"try a lower {section}.lr_g / {section}.lr_d" in caplog.text
    assert section == "train" or "train." not in caplog.text
