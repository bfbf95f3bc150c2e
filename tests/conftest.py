"""Shared fixtures: tiny image sets and a packed-data folder as the data stages write it."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


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


def write_pair_data(root: Path, n_train: int = 24, n_test: int = 8, size: int = 32) -> Path:
    """data/sampled + data/roughs as the data stages write them (demo faces, real recipe)."""
    from spade.config import Recipe
    from spade.roughen import roughen_image
    from spade.synthetic import render_face

    recipe = Recipe(median_before=3, spatial_radius=8, color_radius=40, max_level=1, median_after=3)
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1000)):
        images = np.stack([render_face(0, offset + i, size) for i in range(n)])
        roughs = np.stack([roughen_image(im, recipe) for im in images])
        for folder, arr in (("sampled", images), ("roughs", roughs)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / folder / f"{split}.npy", arr)
    return root


@pytest.fixture(scope="session")
def pair_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pair_data(tmp_path_factory.mktemp("pairs") / "data")


def copy_repo(dest: Path) -> Path:
    """A temp copy of the repository's tracked and new files (no data, cache or venv)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


# The demo's recipe (params.yaml), the one a studio user meets first.
STUDIO_RECIPE = {
    "median_before": 3,
    "spatial_radius": 13,
    "color_radius": 52,
    "max_level": 1,
    "median_after": 5,
}


def write_tiny_generator(path: Path, size: int = 32, use_vae: bool = True) -> Path:
    """A randomly initialised (fixed torch seed) tiny generator file: enough to serve faces."""
    import torch

    from spade.checkpoint import write_generator
    from spade.config import GeneratorArch, Recipe
    from spade.networks import StyledGenerator

    with torch.random.fork_rng():
        torch.manual_seed(0)
        arch = GeneratorArch(ngf=4, spade_hidden=8, z_dim=8, nef=4, use_vae=use_vae)
        model = StyledGenerator(arch, size).eval()
    write_generator(path, model, Recipe(**STUDIO_RECIPE))
    return path


@pytest.fixture(scope="session")
def tiny_generator_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_generator(tmp_path_factory.mktemp("studio") / "generator.pt")


@pytest.fixture(scope="session")
def tiny_face_generator(tiny_generator_file: Path):
    """The tiny generator loaded on the CPU, as `spade studio` loads it."""
    import torch

    from spade.checkpoint import load_generator
    from spade.generate import FaceGenerator

    device = torch.device("cpu")
    model, recipe = load_generator(tiny_generator_file, device)
    return FaceGenerator(model, recipe, device)


def launch_stage(name: str, cwd: Path, **env: str) -> subprocess.Popen:
    """`python stages/<name>.py` in `cwd` as a child process, stdout and stderr together."""
    import os
    import sys

    return subprocess.Popen(
        [sys.executable, str(ROOT / f"stages/{name}.py")],
        cwd=cwd,
        env=os.environ | {"PYTHONUNBUFFERED": "1"} | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
