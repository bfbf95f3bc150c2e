"""The CPU runtimes (ONNX Runtime, OpenVINO): the same faces as PyTorch for the same seed, a
cached export that is verified and keyed by all the graph depends on, and `auto` choosing by a
measurement."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import spade
from spade import painter as painter_module
from spade.checkpoint import load_generator, write_generator
from spade.errors import UserError
from spade.painter import Painter, RegionStyle, load_painter
from spade.runtime import make_runner, native_bf16, onnx_bytes, precision_of

from conftest import blob_image, write_tiny_generator

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
    assert precision_of(bf16.runner) == ("bf16" if native_bf16(CPU) else "fp32")


def test_the_export_is_cached_and_byte_stable(tiny_generator_file, onnx_cache, monkeypatch):
    load_painter(tiny_generator_file, CPU, "onnx")
    (cached,) = onnx_cache.glob("*.onnx")
    with monkeypatch.context() as patch:  # the same graph, not exported again
        patch.setattr("spade.runtime.onnx_bytes", lambda model: pytest.fail("exported again"))
        load_painter(tiny_generator_file, CPU, "openvino")
    assert list(onnx_cache.glob("*.onnx")) == [cached]
    model, _ = load_generator(tiny_generator_file, CPU)
    assert onnx_bytes(model) == cached.read_bytes()


def test_auto_measures_and_names_its_choice(tiny_generator_file, caplog):
    model, _ = load_generator(tiny_generator_file, CPU)
    with caplog.at_level(logging.INFO, logger="spade.runtime"):
        runner = make_runner("auto", model)
    assert runner.name in ("torch", "onnx", "openvino")
    assert f"runtime: {runner.name} (one face: torch" in caplog.text


def test_the_model_itself_is_left_as_it_was(tiny_generator_file):
    """Exporting folds spectral norm into a new instance: the loaded model still runs."""
    torch_gen = load_painter(tiny_generator_file, CPU, "torch")
    before = faces(torch_gen)
    make_runner("onnx", torch_gen.model)
    np.testing.assert_array_equal(faces(torch_gen), before)


def onnx_matches_torch(path: Path) -> bool:
    reference = faces(load_painter(path, CPU, "torch"))
    return bool(np.abs(faces(load_painter(path, CPU, "onnx")) - reference).max() <= 1)


@pytest.mark.parametrize("damage", ["truncated", "empty", "symlink"])
def test_a_damaged_cached_graph_is_exported_again(tiny_generator_file, onnx_cache, damage, caplog):
    load_painter(tiny_generator_file, CPU, "onnx")
    (cached,) = onnx_cache.glob("*.onnx")
    whole = cached.read_bytes()
    if damage == "symlink":
        cached.unlink()
        cached.symlink_to(tiny_generator_file)
    else:
        cached.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"")
    with caplog.at_level(logging.WARNING, logger="spade.runtime"):
        assert onnx_matches_torch(tiny_generator_file)
    assert "exporting it again" in caplog.text
    assert not cached.is_symlink() and cached.read_bytes() == whole


def test_the_graph_is_the_loaded_models_when_the_file_is_replaced(
    tiny_generator_file, tmp_path, monkeypatch
):
    """The file changes between loading the model and exporting it: each model gets its graph."""
    path = tmp_path / "generator.pt"
    shutil.copy(tiny_generator_file, path)
    other, recipe = load_generator(path, CPU)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))

    def load_then_replace(file, device):
        loaded = load_generator(file, device)
        write_generator(path, other, recipe)  # another model lands while the first is exported
        return loaded

    with monkeypatch.context() as patch:
        patch.setattr(painter_module, "load_generator", load_then_replace)
        first = load_painter(path, CPU, "onnx")
    assert np.abs(faces(first) - faces(load_painter(tiny_generator_file, CPU, "torch"))).max() <= 1
    assert onnx_matches_torch(path)  # the new model, not the first one's cached graph


def test_a_change_to_the_network_code_exports_a_new_graph(
    tiny_generator_file, tmp_path, onnx_cache
):
    load_painter(tiny_generator_file, CPU, "onnx")  # cached with today's networks.py
    code = tmp_path / "code"
    shutil.copytree(
        Path(spade.__file__).parent, code / "spade", ignore=shutil.ignore_patterns("__pycache__")
    )
    networks = code / "spade/networks.py"
    old = "return torch.tanh(self.to_rgb("
    assert networks.read_text().count(old) == 1
    networks.write_text(networks.read_text().replace(old, "return -torch.tanh(self.to_rgb("))
    script = (
        "import sys, numpy as np, torch\n"
        "from spade.painter import load_painter\n"
        "rough = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)\n"
        "cpu = torch.device('cpu')\n"
        "a, b = (load_painter(sys.argv[1], cpu, r).face(rough, 0) for r in ('torch', 'onnx'))\n"
        "print(np.abs(a.astype(int) - b).max())\n"
    )
    env = os.environ | {"PYTHONPATH": str(code), "SPADE_ONNX_CACHE": str(onnx_cache)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tiny_generator_file)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) <= 1
    assert len(list(onnx_cache.glob("*.onnx"))) == 2


def test_a_full_cache_disk_falls_back_to_exporting(
    tiny_generator_file, onnx_cache, monkeypatch, caplog
):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with caplog.at_level(logging.WARNING, logger="spade.runtime"):
        assert load_painter(tiny_generator_file, CPU, "onnx").runner.name == "onnx"
    assert "cannot cache the ONNX graph" in caplog.text
    assert not list(onnx_cache.glob("*.onnx"))


def test_auto_skips_a_runtime_that_does_not_import(
    tiny_generator_file, tmp_path, monkeypatch, caplog
):
    broken = tmp_path / "site/openvino"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise ImportError("libopenvino.so: cannot open shared object file")\n'
    )
    monkeypatch.syspath_prepend(str(broken.parent))
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    with caplog.at_level(logging.WARNING, logger="spade.runtime"):
        assert load_painter(tiny_generator_file, CPU, "auto").runner.name != "openvino"
    assert "openvino" in caplog.text and "cannot open shared object" in caplog.text
    with pytest.raises(UserError, match=r"openvino.*cannot open shared object"):
        load_painter(tiny_generator_file, CPU, "openvino")


def test_an_empty_cache_variable_means_the_default_folder(
    tiny_generator_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("SPADE_ONNX_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    load_painter(tiny_generator_file, CPU, "onnx")
    assert not list((tmp_path / "cwd").iterdir())
    assert list((tmp_path / "xdg/spade-anime/onnx").glob("*.onnx"))


def test_bf16_is_reported_only_where_openvino_computes_it(tiny_generator_file, monkeypatch, caplog):
    monkeypatch.setattr("spade.runtime.native_bf16", lambda device: False, raising=False)
    with caplog.at_level(logging.WARNING, logger="spade.runtime"):
        painter = load_painter(tiny_generator_file, CPU, "openvino", "bf16")
    assert precision_of(painter.runner) == "fp32"  # what /api/info and the start line report
    openvino = pytest.importorskip("openvino")
    compiled = painter.runner.by_codes[1]  # the plain graph, compiled at load
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert "bf16" in caplog.text


def test_the_cache_keeps_the_most_recently_used_graphs(
    tiny_generator_file, onnx_cache, monkeypatch
):
    monkeypatch.setattr("spade.runtime.CACHE_KEEP", 2, raising=False)
    onnx_cache.mkdir()
    for i in range(3):  # graphs of other models, used long ago
        old = onnx_cache / f"old{i}.onnx"
        old.write_bytes(b"graph")
        os.utime(old, (1000 + i, 1000 + i))
    load_painter(tiny_generator_file, CPU, "onnx")
    kept = sorted(p.name for p in onnx_cache.glob("*.onnx"))
    assert len(kept) == 2 and "old2.onnx" in kept
    (ours,) = (p for p in onnx_cache.glob("*.onnx") if p.name != "old2.onnx")
    os.utime(ours, (1, 1))
    load_painter(tiny_generator_file, CPU, "onnx")  # a cache hit marks it as used
    assert ours.stat().st_mtime > 1000


def test_no_bf16_where_onednn_is_capped_below_it(monkeypatch):
    """A oneDNN capped at AVX2 (as on an AVX2-only CPU) cannot compute bf16: fp32 is chosen."""
    from spade.runtime import native_bf16

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not native_bf16(torch.device("cpu"))


@pytest.mark.parametrize("style_from", [4, 16])
@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_region_codes_give_the_torch_face_within_one_level(tmp_path, runtime, style_from):
    """The regional graphs (codes and masks as inputs) paint what PyTorch paints, for two and
    three codes (OpenVINO compiles once per count), with z at every layer and from 16 px up (a
    constant start: its export once lost the channel count ONNX's BatchNorm needs)."""
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[runtime])
    tiny_generator_file = write_tiny_generator(tmp_path / "g.pt", style_from=style_from)
    plain = load_painter(tiny_generator_file, CPU, runtime)
    rough0 = np.zeros((32, 32, 3), np.uint8)
    assert (
        np.abs(
            plain.face(rough0, 3).astype(int)
            - load_painter(tiny_generator_file, CPU, "torch").face(rough0, 3)
        ).max()
        <= 1
    )  # the plain graph too
    torch_painter = load_painter(tiny_generator_file, CPU, "torch")
    graph_painter = load_painter(tiny_generator_file, CPU, runtime)
    size = torch_painter.size
    rough = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    top, left = np.zeros((size, size), bool), np.zeros((size, size), bool)
    top[: size // 3], left[:, : size // 4] = True, True
    for masks in ([top], [top, left]):
        regions = [RegionStyle(m, torch_painter.z_for_seed(7 + k)) for k, m in enumerate(masks)]
        want = torch_painter.face(rough, 0, regions=regions).astype(int)
        got = graph_painter.face(rough, 0, regions=regions).astype(int)
        assert np.abs(want - got).max() <= 1
        assert not np.array_equal(want, torch_painter.face(rough, 0))
    assert graph_painter.runner.by_codes.keys() == {
        1,
        2,
        3,
    }  # one graph per number of style codes, 1 the plain one


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_one_code_under_a_mask_of_ones_is_the_plain_graphs_face(tiny_generator_file, runtime):
    """K = 1 with its mask (all ones: masks sum to 1) runs the plain graph: the same bytes as
    the plain face, and no graph of its own."""
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[runtime])
    painter = load_painter(tiny_generator_file, CPU, runtime)
    g = torch.Generator().manual_seed(0)
    size = painter.size
    cond = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    z = torch.randn(1, 1, painter.model.arch.z_dim, generator=g)
    noise = [torch.randn(s, generator=g) for s in painter.model.generator.noise_shapes(1)]
    masked = painter.runner(cond, z, noise, torch.ones(1, 1, size, size))
    assert torch.equal(masked, painter.runner(cond, z[:, 0], noise))
    assert painter.runner.by_codes.keys() == {1}


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_the_regional_graph_is_fp32_when_first_asked_for_under_bf16_autocast(
    tiny_generator_file, runtime
):
    """The studio paints inside bf16 autocast on CPUs with bf16 units, and the regional graph is
    exported when a face first has regions: the export must not trace bf16 (OpenVINO refused
    that graph: a 500 for every face with regions)."""
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[runtime])
    torch_painter = load_painter(tiny_generator_file, CPU, "torch")
    graph_painter = load_painter(tiny_generator_file, CPU, runtime)
    size = torch_painter.size
    rough = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    top = np.zeros((size, size), bool)
    top[: size // 2] = True
    regions = [RegionStyle(top, torch_painter.z_for_seed(9))]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = graph_painter.face(rough, 0, regions=regions).astype(int)
    assert np.abs(got - torch_painter.face(rough, 0, regions=regions)).max() <= 1
