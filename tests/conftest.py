"""Shared fixtures and helpers: tiny image sets, a packed-data folder as the data stages write
it, the tiny training parameters (presets/tiny.yaml over params.yaml: one source for every test
and the GPU check's smoke run), and running stages as processes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from devtools.scratch import ROOT, preset
from spade.config import LoopRun, Recipe
from spade.train import TrainPaths

TINY_PARAMS = preset("params.yaml", "presets/tiny.yaml")
TINY = TINY_PARAMS["train"]  # TrainConfig(**TINY): tiny networks, two short epochs
TINY_RUN = LoopRun(**TINY_PARAMS["run"]["train"])  # no loader processes, a log at every step
ARCH = TINY["arch"]
RECIPE = Recipe(**TINY_PARAMS["roughen"])
DEMO_RECIPE = Recipe(**preset("params.yaml")["roughen"])  # what studio users meet


# --------------------------------------------------------------------------- the gpu marker
# One gate for every `gpu` test: it runs on CUDA when there is one, on the CPU at tiny sizes under
# SPADE_GPU_SMOKE=1 (`bench/gpu_check.py --cpu-smoke`, so the GPU check cannot rot between GPU
# sessions), and is skipped otherwise. A gpu test takes its device from `gpu_device`.
ON_CUDA = torch.cuda.is_available()
GPU_SMOKE = os.environ.get("SPADE_GPU_SMOKE") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None and not (ON_CUDA or GPU_SMOKE):
        pytest.skip("needs CUDA (or SPADE_GPU_SMOKE=1 for the CPU smoke run)")


@pytest.fixture
def gpu_device(request: pytest.FixtureRequest) -> torch.device:
    """The device of a `gpu` test: CUDA, or the CPU in the smoke run."""
    assert request.node.get_closest_marker("gpu") is not None, "for tests marked gpu"
    return torch.device("cuda" if ON_CUDA else "cpu")


# --------------------------------------------------------------------------- images and data


def blob_image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A few coloured blobs on a flat background: an easy RGB test image."""
    img = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(3):
        cy, cx = rng.integers(0, size, 2).tolist()
        r = int(rng.integers(3, size // 3))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def png_bytes(img: np.ndarray | Image.Image, **save_kw) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format=save_kw.pop("format", "PNG"), **save_kw)
    return buf.getvalue()


def eps_bytes() -> bytes:
    """A small EPS picture (PostScript): Pillow would hand it to Ghostscript to decode."""
    return png_bytes(Image.new("RGB", (8, 8), (200, 30, 30)), format="EPS")


@pytest.fixture
def fake_gs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gs` first on PATH, for this process and those it starts, that only leaves a marker
    file: the returned marker must never appear."""
    marker, bin_dir = tmp_path / "gs-ran", tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\n')
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("PIL.EpsImagePlugin.gs_binary", None)  # Pillow caches where gs is
    return marker


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 valid PNGs in nested folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "faces"
    for i in range(12):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.png").write_bytes(png_bytes(blob_image(rng, 40)))
    return root


def write_pair_data(
    root: Path, n_train: int = 24, n_test: int = 8, size: int = 32, test_offset: int = 1000
) -> Path:
    """data/sampled + data/roughs as the data stages write them (demo faces, the tiny recipe):
    faces 0… for training, `test_offset`… for testing."""
    from spade.roughen import roughen_image
    from spade.synthetic import render_face

    recipe = RECIPE
    for split, n, offset in (("train", n_train, 0), ("test", n_test, test_offset)):
        images = np.stack([render_face(0, offset + i, size) for i in range(n)])
        roughs = np.stack([roughen_image(im, recipe) for im in images])
        for folder, arr in (("sampled", images), ("roughs", roughs)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / folder / f"{split}.npy", arr)
    return root


@pytest.fixture(scope="session")
def pair_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pair_data(tmp_path_factory.mktemp("pairs") / "data")


def write_tiny_generator(
    path: Path, size: int = 32, use_vae: bool = True, style_from: int = 4
) -> Path:
    """A randomly initialised (fixed torch seed) tiny generator file: enough to serve faces."""
    import torch

    from spade.checkpoint import write_generator
    from spade.config import GeneratorArch
    from spade.networks import FaceModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        arch = GeneratorArch(
            ngf=4, spade_hidden=8, z_dim=8, nef=4, use_vae=use_vae, style_from=style_from
        )
        model = FaceModel(arch, size).eval()
    write_generator(path, model, DEMO_RECIPE)
    return path


@pytest.fixture(scope="session")
def tiny_generator_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_generator(tmp_path_factory.mktemp("studio") / "generator.pt")


@pytest.fixture(scope="session")
def tiny_painter(tiny_generator_file: Path):
    """The tiny generator loaded on the CPU, as `spade studio` loads it."""
    import torch

    from spade.checkpoint import load_generator
    from spade.painter import Painter

    device = torch.device("cpu")
    model, recipe = load_generator(tiny_generator_file, device)
    return Painter(model, recipe, device)


def launch_stage(name: str, cwd: Path, *, own_group: bool = False, **env: str) -> subprocess.Popen:
    """`python stages/<name>.py` in `cwd` as a child process, stdout and stderr together;
    `own_group`: in a process group of its own (its pid), as a batch job or `timeout` runs it."""
    import os
    import sys

    return subprocess.Popen(
        [sys.executable, str(ROOT / f"stages/{name}.py")],
        cwd=cwd,
        env=os.environ | {"PYTHONUNBUFFERED": "1"} | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_group,
    )


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (zombies of exited children do not count)."""
    import os

    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


# --------------------------------------------------------------------------- training runs


def paths_in(tmp: Path, data: Path, layout: TrainPaths | None = None) -> TrainPaths:
    """A run's files (`layout`: the train stage's by default, `spade.distill.DISTILL_PATHS`
    for the student) under `tmp`, reading `data`."""
    layout = layout or TrainPaths()
    moved = {
        f.name: tmp / getattr(layout, f.name)
        for f in fields(layout)
        if f.name != "data" and getattr(layout, f.name) is not None
    }
    return replace(layout, data=data, **moved)


def stage_dir(
    tmp: Path, data: Path, section: str = "train", run: dict | None = None, **overrides
) -> Path:
    """A working directory as `dvc repro` sees it: the tiny params.yaml (with `overrides` in
    `section`, and `run` in `run.<section>`) and a copy of data/."""
    params = TINY_PARAMS | {section: TINY_PARAMS[section] | overrides}
    speed = TINY_PARAMS["run"] | {section: TINY_PARAMS["run"][section] | (run or {})}
    params |= {"run": speed}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(data, tmp / "data")
    return tmp


def wait_for_checkpoint(proc, path: Path, min_step: int, timeout: float = 120) -> int:
    """The step of the first checkpoint at `path` at `min_step` or later, while `proc` runs."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if path.is_file():
            step = torch.load(path, weights_only=True)["step"]
            if step >= min_step:
                return step
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
