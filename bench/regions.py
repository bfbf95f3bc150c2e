"""Benchmark region styles: a face with one restyled region against the plain face.

Times the student of a preset (random weights: timing only) at its size, one face at a time, on
each CPU runtime: the plain graph (one style code, what every face without regions runs) and
the regional graph with 2 codes (the base and one region covering the top third), each the
median of `--repeats` calls after one warm-up, and prints the regional/plain ratio measured in
the same run. The issue's goal: a face with regions within 1.10× of the plain face.

    python bench/regions.py                          # full preset, 256 px, torch/onnx/openvino
    python bench/regions.py --runtimes onnx --repeats 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from spade.config import GeneratorArch
from spade.networks import FaceModel
from spade.runtime import make_runner, zero_inputs


def median_ms(run, inputs: tuple, repeats: int) -> float:
    run(*inputs)  # warm-up: graph compilation, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*inputs)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def student(preset: str) -> FaceModel:
    with open(preset) as f:
        params = yaml.safe_load(f)
    arch = GeneratorArch(**(params["train"]["arch"] | params["distill"]["arch"]))
    torch.manual_seed(0)
    return FaceModel(arch, params["sample"]["image_size"]).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="presets/full.yaml")
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "openvino"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = student(args.preset)
    size = model.image_size
    cond, _, noise = zero_inputs(model)
    g = torch.Generator().manual_seed(1)
    cond = torch.rand(cond.shape, generator=g) * 2 - 1
    noise = [torch.randn(n.shape, generator=g) for n in noise]
    codes = torch.randn(1, 2, model.arch.z_dim, generator=g)
    masks = torch.zeros(1, 2, size, size)
    masks[:, 0] = 1
    masks[:, :, : size // 3] = torch.tensor([0.0, 1.0])[:, None, None]
    print(f"student of {args.preset} at {size} px, fp32, {args.threads} threads")
    for name in args.runtimes:
        run = make_runner(name, model)
        plain = median_ms(run, (cond, codes[:, 0], noise), args.repeats)
        regional = median_ms(run, (cond, codes, noise, masks), args.repeats)
        print(
            f"{name:9s} plain {plain:7.1f} ms   2 codes {regional:7.1f} ms   "
            f"ratio {regional / plain:.2f}"
        )


if __name__ == "__main__":
    main()
