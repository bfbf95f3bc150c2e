"""Benchmark region styles: a face with restyled regions against the plain face.

Times the student of a preset (random weights: timing only) at its size, one face at a time, on
each CPU runtime: the plain face (one style code, what every face without regions runs) and
faces with 2 and 3 codes (the base, the top third, and the left quarter). A shared CPU drifts by
tens of percent over a minute, so the faces are timed in alternating rounds — plain, 2 codes,
3 codes, again — and each is reported by its fastest round, what the machine gives when nothing
else runs (the median beside it); the ratios are of the fastest rounds, which mostly repeat
within 1-2 % between runs where medians moved by 5-10 % (a run in a slow phase of a shared host
reads high: run it again). The issue's goal: a face with regions within
1.10× of the plain face.

    python bench/regions.py                          # full preset, 256 px, torch/onnx/openvino
    python bench/regions.py --runtimes openvino --repeats 40
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np
import torch
import yaml

from spade.config import GeneratorArch
from spade.networks import FaceModel
from spade.runtime import make_runner, zero_inputs


def alternating_rounds(calls: list[Callable[[], object]], rounds: int) -> np.ndarray:
    """(rounds, calls) seconds: each call once per round, in turn, after a warm-up call each
    (graph export and compilation, caches), so a drifting machine slows them all alike."""
    for call in calls:
        call()
    times = np.empty((rounds, len(calls)))
    for r in range(rounds):
        for c, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[r, c] = time.perf_counter() - start
    return times


def student(preset: str) -> FaceModel:
    with open(preset) as f:
        params = yaml.safe_load(f)
    arch = GeneratorArch(**(params["train"]["arch"] | params["distill"]["arch"]))
    torch.manual_seed(0)
    return FaceModel(arch, params["sample"]["image_size"]).eval()


def region_masks(size: int, codes: int) -> torch.Tensor:
    """(1, codes, size, size) masks that sum to 1: the base, then the top third, then the left
    quarter below it."""
    owner = torch.zeros(size, size, dtype=torch.long)
    owner[: size // 3] = 1
    if codes > 2:
        owner[size // 3 :, : size // 4] = 2
    return torch.nn.functional.one_hot(owner, codes).permute(2, 0, 1)[None].float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="presets/full.yaml")
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "openvino"])
    p.add_argument("--repeats", type=int, default=40, help="rounds (each times every face once)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = student(args.preset)
    size = model.image_size
    cond, _, noise = zero_inputs(model)
    g = torch.Generator().manual_seed(1)
    cond = torch.rand(cond.shape, generator=g) * 2 - 1
    noise = [torch.randn(n.shape, generator=g) for n in noise]
    codes = torch.randn(1, 3, model.arch.z_dim, generator=g)
    faces = {
        "plain": (cond, codes[:, 0], noise),
        "2 codes": (cond, codes[:, :2], noise, region_masks(size, 2)),
        "3 codes": (cond, codes, noise, region_masks(size, 3)),
    }
    print(f"student of {args.preset} at {size} px, fp32, {args.threads} threads")
    for name in args.runtimes:
        run = make_runner(name, model)
        calls = [functools.partial(run, *inputs) for inputs in faces.values()]
        rounds = alternating_rounds(calls, args.repeats)
        fastest, median = 1000 * rounds.min(axis=0), 1000 * np.median(rounds, axis=0)
        shown = [f"{f:6.1f} ms (median {m:6.1f})" for f, m in zip(fastest, median, strict=True)]
        print(
            f"{name:9s} plain {shown[0]}   2 codes {shown[1]} {fastest[1] / fastest[0]:.3f}x   "
            f"3 codes {shown[2]} {fastest[2] / fastest[0]:.3f}x"
        )


if __name__ == "__main__":
    main()
