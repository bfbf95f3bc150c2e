"""Training throughput and model FLOPs utilisation (MFU), nanoGPT's `estimate_mfu` for this GAN.

Shown in the progress bar and in a log line at each epoch's end, never in dvclive: `dvclive/` is a
DVC output whose bytes must be the same on every run and every CPU (so that `dvc.lock` only
changes when the params or the data do), and a wall-clock number there would change it on every
run. The tracked logs keep what the params reproduce; the speed goes to the terminal.

The FLOPs of a step are an estimate, as nanoGPT's 6N is: each network's forward FLOPs for one
image, counted once at the start by PyTorch's FLOP counter (2 per multiply-add, on copies, so
training's weights, statistics and random streams are untouched), times how often a step runs it
(`step_flops`). MFU divides the achieved FLOP/s by the device's dense peak, known only for the
GPUs in `PEAK_TFLOPS`; elsewhere (CPUs) only the achieved GFLOP/s is shown.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from spade.config import LoopConfig
from spade.train_state import TrainState

# Dense peak TFLOP/s (bf16, TF32) of the GPUs this project has run on, from their data sheets.
PEAK_TFLOPS = {"H100": (989.4, 494.7), "H200": (989.4, 494.7), "A100": (312.0, 156.0)}


def peak_tflops(device: torch.device, bf16: bool) -> float | None:
    """The device's dense peak in TFLOP/s (bf16 or TF32), or None when it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peaks = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return None if peaks is None else peaks[0 if bf16 else 1]


def forward_flops(module: nn.Module, *args: torch.Tensor, **kwargs: object) -> float:
    """FLOPs of one forward pass of a copy of `module` in eval mode: BatchNorm statistics,
    spectral-norm vectors and the global random stream of the original stay as they were."""
    from torch.utils.flop_counter import FlopCounterMode

    device = args[0].device
    twin = copy.deepcopy(module).eval()
    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        torch.no_grad(),
        FlopCounterMode(display=False) as counter,
    ):
        twin(*args, **kwargs)
    return float(counter.get_total_flops())


def step_flops(state: TrainState, cfg: LoopConfig, image_size: int, device: torch.device) -> float:
    """Estimated FLOPs of one training step per image (a backward pass costs about two forward
    ones): the generator forward and backward (1.5 times with mode seeking's second face); D
    forward and backward on the fake and the real pair, then forward and back to its input for
    G's loss (8 D passes); the VGG loss on both faces, back through the fake (3); the frozen
    teacher forward (1)."""
    rough = torch.zeros(1, 3, image_size, image_size, device=device)
    g = forward_flops(state.g_ema, rough, style=rough)
    d = forward_flops(state.bare_d, torch.cat([rough, rough], 1))
    total = 3 * g * (1.5 if getattr(cfg, "lambda_ms", 0) > 0 else 1) + 8 * d
    if state.vgg is not None:
        total += 3 * forward_flops(state.vgg, rough, rough)
    if state.teacher is not None:
        total += forward_flops(state.teacher, rough, style=rough)
    return total


@dataclass
class Throughput:
    """Images per second since the run (or its resumption) started, and what they mean in FLOP/s
    and MFU."""

    flops_per_image: float
    peak_tflops: float | None
    images: int = 0
    start: float = field(default_factory=time.perf_counter)

    def update(self, images: int) -> None:
        self.images += images

    def summary(self) -> dict[str, str]:
        """For the progress bar and the log: img/s, achieved GFLOP/s and, with a known peak, MFU."""
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        achieved = rate * self.flops_per_image
        shown = {"img_s": _short(rate), "gflop_s": _short(achieved / 1e9)}
        if self.peak_tflops:
            shown["mfu"] = _short(100 * achieved / (self.peak_tflops * 1e12)) + "%"
        return shown


def _short(x: float) -> str:
    """98.0, 1234.5, 0.0612: one decimal from 10 up, three significant digits below."""
    return f"{x:.1f}" if x >= 10 else f"{x:.3g}"
