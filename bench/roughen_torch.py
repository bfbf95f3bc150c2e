"""Benchmark spade.roughen_torch against a bare serial loop of the five OpenCV calls.

Prints images/s, on demo faces, for
  (a) a bare cv2 loop on one core (the baseline, measured in the same run),
  (b) roughen_torch on the CPU (plain torch, one torch thread by default: like (a), and
      OpenMP threads that wait on each other are much slower on a busy machine),
  (c) roughen_torch on CUDA (Triton kernels) when a GPU is present: warmed up first, with
      the first call's extra time (Triton compilation) reported on its own line,
at 64, 128 and 256 px with the seed recipe (9, 52, 52, 1, 15) and at 64 px with the demo
recipe (3, 13, 52, 1, 5), each as a ratio against (a). Every row checks its first images
byte for byte against cv2. On CUDA it also reports peak GPU memory per batch size.

    python bench/roughen_torch.py                 # ~1-2 min on a 2-core CPU
    python bench/roughen_torch.py --gpu-n 512     # more images per GPU row
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from spade.config import Recipe
from spade.roughen import roughen_image
from spade.roughen.torch_engine import roughen_torch
from spade.synthetic import render_face

log = logging.getLogger("bench.roughen_torch")

SEED = Recipe(median_before=9, spatial_radius=52, color_radius=52, max_level=1, median_after=15)
DEMO = Recipe(median_before=3, spatial_radius=13, color_radius=52, max_level=1, median_after=5)
ROWS = [("seed", SEED, 64), ("seed", SEED, 128), ("seed", SEED, 256), ("demo", DEMO, 64)]


_FACES: dict[int, np.ndarray] = {}


def faces(n: int, size: int) -> np.ndarray:
    """The first n demo faces at this size (drawn once, then sliced)."""
    have = _FACES.get(size, np.empty((0, size, size, 3), np.uint8))
    if len(have) < n:
        more = [render_face(7, i, size) for i in range(len(have), n)]
        _FACES[size] = have = np.concatenate([have, np.stack(more)])
    return have[:n]


def bare_loop(images: np.ndarray, recipe: Recipe) -> np.ndarray:
    return np.stack([roughen_image(im, recipe) for im in images])


def rate(fn: Callable[[], np.ndarray], n: int, sync: bool = False) -> tuple[float, np.ndarray]:
    """Images per second of one call of fn (synchronising CUDA around it)."""
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), out


def check(out: np.ndarray, images: np.ndarray, recipe: Recipe, k: int = 2) -> None:
    """The first k outputs are byte for byte those of cv2."""
    k = min(k, len(out))
    bad = int((out[:k] != bare_loop(images[:k], recipe)).sum())
    if bad:
        raise AssertionError(f"{bad} bytes differ from cv2")


def gpu_warmup(recipe: Recipe) -> float:
    """Seconds of the first CUDA call beyond a steady one (Triton compilation, CUDA init)."""
    images = faces(4, 64)
    t0 = time.perf_counter()
    roughen_torch(images, recipe, "cuda")
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    roughen_torch(images, recipe, "cuda")
    torch.cuda.synchronize()
    return first - (time.perf_counter() - t0)


def gpu_memory(size: int, batches: list[int]) -> None:
    for n in batches:
        images = faces(n, size)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        speed, _ = rate(lambda im=images: roughen_torch(im, SEED, "cuda"), n, sync=True)
        peak = torch.cuda.max_memory_allocated() / 2**20
        log.info(
            "  %3d px, batch %4d: peak GPU memory %7.1f MiB, %7.1f img/s", size, n, peak, speed
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cv2-seconds", type=float, default=4.0, help="time budget per cv2 row")
    p.add_argument("--cpu-n", type=int, nargs=4, default=[4, 2, 1, 8], help="images per CPU row")
    p.add_argument("--gpu-n", type=int, default=256, help="images per CUDA row")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads for (b)")
    p.add_argument("--no-cpu-torch", action="store_true", help="skip (b)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)
    torch.set_num_threads(args.cpu_threads)
    cuda = torch.cuda.is_available()
    log.info(
        "torch %s (%d CPU thread(s)), cv2 %s (1 thread), device: %s",
        torch.__version__,
        torch.get_num_threads(),
        cv2.__version__,
        torch.cuda.get_device_name() if cuda else "CPU only",
    )
    if cuda:
        log.info("first CUDA call: +%.1f s (Triton compilation, CUDA start-up)", gpu_warmup(SEED))
        gpu_warmup(DEMO)

    header = f"{'recipe':6} {'px':>4} | {'(a) cv2 1 core':>15} | {'(b) torch CPU':>22}"
    header += f" | {'(c) torch CUDA':>22}" if cuda else ""
    log.info(header)
    for (name, recipe, size), cpu_n in zip(ROWS, args.cpu_n, strict=True):
        # (a): as many images as fit the time budget, after one to size it.
        one = faces(1, size)
        t0 = time.perf_counter()
        bare_loop(one, recipe)
        n_cv2 = int(np.clip(args.cv2_seconds / (time.perf_counter() - t0), 2, 64))
        images = faces(max(n_cv2, cpu_n), size)
        base, _ = rate(lambda im=images[:n_cv2], r=recipe: bare_loop(im, r), n_cv2)
        line = f"{name:6} {size:4} | {base:9.2f} img/s |"
        if not args.no_cpu_torch:
            cpu, out = rate(lambda im=images[:cpu_n], r=recipe: roughen_torch(im, r), cpu_n)
            check(out, images, recipe)
            line += f" {cpu:7.2f} img/s {cpu / base:5.2f}x |"
        else:
            line += f" {'-':>22} |"
        if cuda:
            gpu_images = faces(args.gpu_n, size)
            gpu, out = rate(
                lambda im=gpu_images, r=recipe: roughen_torch(im, r, "cuda"), args.gpu_n, sync=True
            )
            check(out, gpu_images, recipe)
            line += f" {gpu:7.1f} img/s {gpu / base:6.1f}x"
        log.info(line)
    if cuda:
        log.info("peak GPU memory (seed recipe, default chunk_pixels):")
        gpu_memory(256, [1, 16, 64, 256])


if __name__ == "__main__":
    main()
