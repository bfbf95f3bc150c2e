"""Benchmark the roughen stage against a bare serial loop of the five OpenCV calls.

Prints images/s for, on the same images in one run:
  1. a bare serial loop of the five OpenCV calls (the baseline, one core),
  2. the stage's code at n_jobs=1,
  3. the stage's code on all cores,
  4. an incremental re-run after adding 10% more images (content-addressed cache),
  5. with --dask, a local Dask cluster of 1 and 2 worker processes (run.roughen.scheduler),
and the ratios the targets are stated in: ≥0.95× the bare loop per core, ≥1.8× on 2 cores,
incremental re-run ≤15% of a full run. OpenCV runs one thread per process everywhere, so
"per core" means what it says.

    python bench/roughen.py --n 200 --size 128 [--dask]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time

import cv2
import numpy as np

from spade.config import Recipe
from spade.roughen import RoughCache, roughen_array
from spade.synthetic import render_face

log = logging.getLogger("bench.roughen")


def bare_loop(images: np.ndarray, r: Recipe) -> np.ndarray:
    out = np.empty_like(images)
    for i, rgb in enumerate(images):
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hsv = cv2.medianBlur(hsv, r.median_before)
        hsv = cv2.pyrMeanShiftFiltering(hsv, r.spatial_radius, r.color_radius, maxLevel=r.max_level)
        hsv = cv2.medianBlur(hsv, r.median_after)
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dask_rows(images: np.ndarray, recipe: Recipe, t_bare: float) -> None:
    """images/s on a local Dask cluster of 1 and 2 worker processes (one thread each)."""
    from distributed import LocalCluster

    for workers in (1, 2):
        with LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            run = functools.partial(
                roughen_array,
                images,
                np.empty_like(images),
                recipe,
                scheduler=cluster.scheduler_address,
                progress=False,
                batch_size=8,
            )
            run()  # workers import the project and warm up
            t = timed(run)
        log.info(
            "Dask, %d worker(s)        %8.1f img/s   %.2fx bare",
            workers,
            len(images) / t,
            t_bare / t,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="images in the full run")
    p.add_argument("--size", type=int, default=128)
    p.add_argument(
        "--seed-recipe",
        action="store_true",
        help="use the seed's 256 px numbers (9, 52, 52, 15) instead of scaling them",
    )
    p.add_argument("--dask", action="store_true", help="also on a local Dask cluster, 1-2 workers")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.setNumThreads(1)
    scale = 1.0 if args.seed_recipe else args.size / 256
    odd = lambda k: max(1, round(k * scale) | 1)  # noqa: E731
    recipe = Recipe(
        median_before=odd(9),
        spatial_radius=max(1.0, 52 * scale),
        color_radius=52.0,
        max_level=1,
        median_after=odd(15),
    )
    n_extra = max(1, args.n // 10)
    faces = np.stack([render_face(1, i, args.size) for i in range(args.n + n_extra)])
    images, cores = faces[: args.n], os.cpu_count() or 1
    log.info("%d images of %d px, recipe %s, %d cores", args.n, args.size, recipe, cores)

    out = np.empty_like(images)
    t_bare = timed(lambda: bare_loop(images, recipe))
    t_one = timed(lambda: roughen_array(images, out, recipe, n_jobs=1, progress=False))
    t_all = timed(lambda: roughen_array(images, out, recipe, n_jobs=-1, progress=False))
    np.testing.assert_array_equal(out[:4], bare_loop(images[:4], recipe))

    with tempfile.TemporaryDirectory() as tmp:
        cache = RoughCache(tmp)
        grown = np.empty_like(faces)
        t_full = timed(
            lambda: roughen_array(images, out, recipe, n_jobs=-1, cache=cache, progress=False)
        )
        t_incr = timed(
            lambda: roughen_array(faces, grown, recipe, n_jobs=-1, cache=cache, progress=False)
        )

    if args.dask:
        dask_rows(images, recipe, t_bare)
    rate = lambda t: args.n / t  # noqa: E731
    log.info("bare serial loop           %8.1f img/s", rate(t_bare))
    log.info(
        "stage, n_jobs=1            %8.1f img/s   %.2fx bare (target >= 0.95)",
        rate(t_one),
        t_bare / t_one,
    )
    log.info(
        "stage, n_jobs=-1 (%d cores) %8.1f img/s   %.2fx bare (target >= 1.8 on 2 cores)",
        cores,
        rate(t_all),
        t_bare / t_all,
    )
    log.info("full run with cache (cold) %8.2f s", t_full)
    log.info(
        "re-run after +10%% images   %8.2f s   %.1f%% of the full run (target <= 15%%)",
        t_incr,
        100 * t_incr / t_full,
    )


if __name__ == "__main__":
    main()
