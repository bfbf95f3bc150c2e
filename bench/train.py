"""Benchmark one full training step (D update + G update) in images/s.

For a fixed image size and batch, compares plain fp32 (contiguous tensors, no autocast) with the
fast path the trainer uses (channels_last, plus bf16 autocast where the device has it: CUDA).
Runs on the CPU, and on the GPU at 256 px whenever one is available.

    python bench/train.py                       # CPU at 64 px (demo networks) + GPU if present
    python bench/train.py --cpu-size 128 --steps 5
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from spade.config import TrainConfig
from spade.dist import DistEnv
from spade.train import train_step
from spade.train_state import build_train_state

log = logging.getLogger("bench.train")

DEMO_NETS = {
    "arch": {"ngf": 16, "spade_hidden": 32, "z_dim": 64},
    "disc": {"ndf": 16, "n_layers": 3, "num_d": 2},
}
FULL_NETS = {
    "arch": {"ngf": 64, "spade_hidden": 128, "z_dim": 256},
    "disc": {"ndf": 64, "n_layers": 4, "num_d": 2},
}


def images_per_s(cfg: TrainConfig, size: int, device: torch.device, steps: int) -> float:
    torch.manual_seed(0)
    state = build_train_state(cfg, size, DistEnv(device=device))
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    b = cfg.batch_size
    rough, real = (
        (torch.rand(b, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=fmt)
        for _ in range(2)
    )
    for _ in range(2):  # warm-up (cudnn autotuning, allocator)
        train_step(state, rough, real, cfg)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(state, rough, real, cfg)
    sync()
    return steps * b / (time.perf_counter() - t0)


def compare(label: str, base: TrainConfig, size: int, device: torch.device, steps: int) -> None:
    plain = base.model_copy(update={"channels_last": False, "amp": False})
    fast = base.model_copy(update={"channels_last": True, "amp": True})
    r_plain = images_per_s(plain, size, device, steps)
    r_fast = images_per_s(fast, size, device, steps)
    fast_name = ("bf16 autocast + " if device.type == "cuda" else "") + "channels_last"
    log.info("%s %d px, batch %d, %s:", label, size, base.batch_size, device)
    log.info("  %-30s %8.2f img/s", "fp32, contiguous", r_plain)
    log.info("  %-30s %8.2f img/s   %.2fx", fast_name, r_fast, r_fast / r_plain)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu-size", type=int, default=64)
    p.add_argument("--cpu-batch", type=int, default=16)
    p.add_argument("--gpu-size", type=int, default=256)
    p.add_argument("--gpu-batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.backends.cudnn.benchmark = True
    cpu_cfg = TrainConfig(**DEMO_NETS, batch_size=args.cpu_batch, lambda_vgg=0.0)
    compare("CPU, demo networks,", cpu_cfg, args.cpu_size, torch.device("cpu"), args.steps)
    if torch.cuda.is_available():
        log.info("GPU: %s", torch.cuda.get_device_name())
        gpu_cfg = TrainConfig(**FULL_NETS, batch_size=args.gpu_batch, lambda_vgg=0.0)
        compare("GPU, full networks,", gpu_cfg, args.gpu_size, torch.device("cuda"), 4 * args.steps)
    else:
        log.info("no CUDA device: GPU rows skipped")


if __name__ == "__main__":
    main()
