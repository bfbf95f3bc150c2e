"""The CPU runtimes (ONNX Runtime, OpenVINO): the same faces as PyTorch for the same seed, a
cached export, and `auto` choosing by a measurement."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from spade.checkpoint import load_generator
from spade.painter import Painter, load_painter
from spade.runtime import make_runner, onnx_bytes

from conftest import blob_image

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPADE_ONNX_CACHE", str(tmp_path / "onnx"))
    return tmp_path / "onnx"


def faces(gen: Painter, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(3)
    roughs = [blob_image(rng, gen.size) for _ in range(n)]
    return np.stack([gen.face(r, seed) for seed, r in enumerate(roughs)]).astype(int)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_a_seed_gives_the_torch_face_within_one_level(tiny_generator_file, runtime):
    reference = faces(load_painter(tiny_generator_file, CPU, "torch"))
    other = load_painter(tiny_generator_file, CPU, runtime)
    assert other.runner.name == runtime
    assert np.abs(faces(other) - reference).max() <= 1


def test_bf16_on_openvino_stays_close(tiny_generator_file):
    reference = faces(load_painter(tiny_generator_file, CPU, "torch"))
    bf16 = load_painter(tiny_generator_file, CPU, "openvino", "bf16")
    assert np.abs(faces(bf16) - reference).mean() < 2


def test_the_export_is_cached_and_byte_stable(tiny_generator_file, onnx_cache):
    load_painter(tiny_generator_file, CPU, "onnx")
    (cached,) = onnx_cache.iterdir()
    stamp = cached.stat().st_mtime_ns
    load_painter(tiny_generator_file, CPU, "openvino")  # the same graph, not exported again
    assert [p.name for p in onnx_cache.iterdir()] == [cached.name]
    assert cached.stat().st_mtime_ns == stamp
    model, _ = load_generator(tiny_generator_file, CPU)
    assert onnx_bytes(model) == cached.read_bytes()


def test_auto_measures_and_names_its_choice(tiny_generator_file, caplog):
    model, _ = load_generator(tiny_generator_file, CPU)
    with caplog.at_level(logging.INFO, logger="spade.runtime"):
        runner = make_runner("auto", model, tiny_generator_file)
    assert runner.name in ("torch", "onnx", "openvino")
    assert f"runtime: {runner.name} (one face: torch" in caplog.text


def test_the_model_itself_is_left_as_it_was(tiny_generator_file):
    """Exporting folds spectral norm into a new instance: the loaded model still runs."""
    torch_gen = load_painter(tiny_generator_file, CPU, "torch")
    before = faces(torch_gen)
    make_runner("onnx", torch_gen.model, tiny_generator_file)
    np.testing.assert_array_equal(faces(torch_gen), before)
