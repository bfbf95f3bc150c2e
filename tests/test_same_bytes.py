"""The same bytes on every machine: numerics-sensitive code run as another CPU would run it.

Other CPUs are imitated on this one through the libraries' own dispatch switches: OpenCV's
kernels (`OPENCV_CPU_DISABLE`: AVX2 without AVX-512, SSE alone), ATen's (`ATEN_CPU_CAPABILITY`),
oneDNN's (`ONEDNN_MAX_CPU_ISA`) and the thread count. Each case runs in a fresh process, since
each switch is read once, when its library starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from spade.numerics import has_avx2
from spade.roughen.hsv import hsv_to_rgb

from conftest import ROOT, TINY_PARAMS, launch_stage

# The dispatch paths of OpenCV's kernels: AVX-512, AVX2, AVX, SSE 4.2 (each machine runs one).
OPENCV_PATHS = ["", "AVX512-SKX", "AVX512-SKX,AVX2", "AVX512-SKX,AVX2,AVX,FP16"]


def in_fresh_process(code: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def every_hsv_triple() -> np.ndarray:
    """All 180·256·256 8-bit HSV triples, as 256-px rows (a multiple of every SIMD block)."""
    h, s, v = np.meshgrid(np.arange(180), np.arange(256), np.arange(256), indexing="ij")
    return np.stack([h, s, v], -1).astype(np.uint8).reshape(180 * 256, 256, 3)


@pytest.mark.skipif(
    "*AVX2" not in cv2.getCPUFeaturesLine().split(), reason="OpenCV's AVX2 or AVX-512 path only"
)
def test_hsv_to_rgb_is_opencvs_simd_path_on_every_triple():
    hsv = every_hsv_triple()
    np.testing.assert_array_equal(hsv_to_rgb(hsv), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def test_hsv_to_rgb_converts_each_pixel_alone():
    """The same triple gives the same colour at any width and position (OpenCV's own does not:
    the tail of a row that is no whole SIMD block rounds instead of truncating)."""
    rng = np.random.default_rng(0)
    hsv = every_hsv_triple()[rng.integers(0, 180 * 256, 64)]  # 64 rows of 256 triples
    expected = hsv_to_rgb(hsv)
    for width in (1, 3, 17, 33, 100, 255):
        cut = hsv[:, :width]
        np.testing.assert_array_equal(hsv_to_rgb(cut), expected[:, :width])
        pixels = cut.reshape(-1, 3)
        order = rng.permutation(len(pixels))
        np.testing.assert_array_equal(hsv_to_rgb(pixels[order]), hsv_to_rgb(pixels)[order])


# Rough, palette and each OpenCV step on pictures of random widths 1..300, as one digest.
ROUGH_DIGEST = """
import hashlib, cv2, numpy as np
from spade.config import Recipe
from spade.roughen import roughen_image
from spade.studio.palette import palette
rng = np.random.default_rng(7)
recipe = Recipe(median_before=3, spatial_radius=10, color_radius=30, max_level=1, median_after=5)
h = hashlib.sha256()
colours = np.arange(1 << 24, dtype=np.uint32)
rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], -1).astype(np.uint8)
h.update(cv2.cvtColor(rgb.reshape(4096, 4096, 3), cv2.COLOR_RGB2HSV).tobytes())
for width in [1, 2, 17, 33, 63, 65, 100, 200, 300, *rng.integers(1, 301, 6)]:
    img = rng.integers(0, 256, (int(rng.integers(1, 40)), int(width), 3), dtype=np.uint8)
    img[:, : width // 2] //= 16  # flat-ish regions for the mean shift to join
    h.update(roughen_image(img, recipe).tobytes())
    for k in (3, 5, 9, 15):
        h.update(cv2.medianBlur(img, k).tobytes())
    h.update(cv2.pyrMeanShiftFiltering(img, 13, 52, maxLevel=1).tobytes())
h.update(repr(palette(recipe)).encode())
print(cv2.getCPUFeaturesLine(), h.hexdigest())
"""


@pytest.mark.slow
def test_roughs_and_palette_are_the_same_on_every_opencv_path():
    lines = {path: in_fresh_process(ROUGH_DIGEST, OPENCV_CPU_DISABLE=path) for path in OPENCV_PATHS}
    digests = {line.split()[-1] for line in lines.values()}
    assert len(digests) == 1, lines


# --------------------------------------------------------------------------- training

# Other CPUs as ATen, oneDNN and OpenMP see them: vector width, convolution ISA, thread count.
CPUS = {
    "avx512-2threads": {"ATEN_CPU_CAPABILITY": "avx512", "OMP_NUM_THREADS": "2"},
    "avx2-onednn_avx2-1thread": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OMP_NUM_THREADS": "1",
    },
    "default-onednn_avx2-2threads": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OMP_NUM_THREADS": "2",
    },
    "default-1thread": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
}
MODEL_STAGES = ("train", "distill", "features", "evaluate")
OUTPUTS = ("models", "dvclive", "dvclive_distill", "metrics", "data/features", "data/eval")


def run_stage(stage: str, cwd: Path, **env: str) -> None:
    proc = launch_stage(stage, cwd, SPADE_ROUGHEN_CACHE=str(cwd / ".roughen-cache"), **env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{stage}: {out[-3000:]}"


def digests(run: Path) -> dict[str, str]:
    """sha256 of every file the model stages write that DVC tracks (dvclive's logs too)."""
    files = [p for out in OUTPUTS for p in sorted((run / out).rglob("*")) if p.is_file()]
    return {
        p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in files
        if "checkpoint" not in p.name  # resumable state, not a DVC output
    }


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A working directory with the tiny preset's data, made by the data stages."""
    root = tmp_path_factory.mktemp("same-bytes") / "data-stages"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    for stage in ("demo", "sample", "roughen"):
        run_stage(stage, root)
    return root


def train_everywhere(tiny_data: Path, tmp: Path, cpus: dict, stages, **cpu) -> dict[str, dict]:
    results = {}
    for name, env in cpus.items():
        run = tmp / name
        shutil.copytree(tiny_data, run)
        params = TINY_PARAMS | {"cpu": TINY_PARAMS["cpu"] | cpu}
        (run / "params.yaml").write_text(yaml.safe_dump(params))
        for stage in stages:
            run_stage(stage, run, **env)
        results[name] = digests(run)
    return results


@pytest.mark.slow
def test_model_stages_give_the_same_bytes_on_every_cpu(tiny_data, tmp_path):
    results = train_everywhere(tiny_data, tmp_path, CPUS, MODEL_STAGES)
    first = next(iter(results.values()))
    assert {"models/generator.pt", "models/student.pt", "metrics/eval.json"} <= set(first)
    for name, result in results.items():
        assert result == first, f"{name}: {json.dumps(result)} != {json.dumps(first)}"


@pytest.mark.slow
def test_without_the_pins_those_cpus_train_other_models(tiny_data, tmp_path):
    """The control: the CPUs above really are different, so the test above can fail."""
    cpus = {k: CPUS[k] for k in ("avx512-2threads", "avx2-onednn_avx2-1thread")}
    results = train_everywhere(tiny_data, tmp_path, cpus, ["train"], reproducible=False)
    a, b = (r["models/generator.pt"] for r in results.values())
    assert a != b


WARNS_FOR = """
import logging.handlers, torch
from spade import numerics
from spade.config import CpuConfig
seen = logging.handlers.BufferingHandler(100)
logging.getLogger("spade.numerics").addHandler(seen)
numerics.cpu_vendor = lambda: {vendor!r}
numerics.pin_cpu_numerics(CpuConfig(), torch.device("cpu"))
words = "MKL keeps its pinned path on Intel CPUs only"
print("warned" if any(words in r.getMessage() for r in seen.buffer) else "silent")
"""


@pytest.mark.skipif(not has_avx2(), reason="the pins apply to x86-64 CPUs with AVX2")
@pytest.mark.parametrize(
    ("vendor", "said"), [("AuthenticAMD", "warned"), ("GenuineIntel", "silent")]
)
def test_a_stage_says_where_mkl_does_not_keep_its_pinned_path(vendor, said):
    """MKL honours MKL_CBWR=AVX2 on Intel CPUs only (measured on an AMD EPYC: the same GEMM
    bytes under every MKL_CBWR but COMPATIBLE): elsewhere a stage says its model bytes are that
    vendor's, in a fresh process because the pins must come before the first tensor."""
    assert in_fresh_process(WARNS_FOR.format(vendor=vendor)) == said
