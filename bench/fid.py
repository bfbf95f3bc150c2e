"""Benchmark Inception feature extraction (images/s) on CPU, and on CUDA when available.

Usage: python bench/fid.py --n 64 --batch-size 16 --device auto
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from spade.metrics.inception import extract_features, load_inception

log = logging.getLogger("bench.fid")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images to time (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="square image side in px")
    parser.add_argument(
        "--device", default="auto", help="auto (cpu, plus cuda if available), cpu, cuda, cuda:1..."
    )
    return parser.parse_args()


def devices_for(choice: str) -> list[torch.device]:
    if choice != "auto":
        return [torch.device(choice)]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def images_per_second(images: np.ndarray, device: torch.device, batch_size: int) -> float:
    """Time extract_features on `images` after one warm-up batch."""
    model = load_inception(device)
    extract_features(
        images[:batch_size], device=device, batch_size=batch_size, progress=False, model=model
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    extract_features(images, device=device, batch_size=batch_size, progress=False, model=model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    log.info(
        "torch %s, %d CPU threads, %d images %dx%d, batch %d",
        torch.__version__,
        torch.get_num_threads(),
        args.n,
        args.size,
        args.size,
        args.batch_size,
    )
    for device in devices_for(args.device):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        rate = images_per_second(images, device, args.batch_size)
        log.info("%s (%s): %.2f images/s, %.3f s/image", device, name, rate, 1 / rate)


if __name__ == "__main__":
    main()
