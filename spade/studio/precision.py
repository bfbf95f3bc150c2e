"""The studio's numeric precision: fp32 as trained, or bf16 where the hardware computes it
(PyTorch only: the runner keeps a bf16 copy of the generator, 1.5–2× faster at 256 px on CPUs
with AMX; its faces differ from fp32 ones by about one level in 255)."""

from __future__ import annotations

import torch

from spade.painter import Painter
from spade.runtime import PRECISIONS, native_bf16


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' → bf16 on CPUs that compute it in hardware, else fp32; 'fp32' and 'bf16' as given.

    Not on GPUs: one face at a time is launch-bound there, and bf16 measured slower (H100,
    256 px: 28.9 ms against 15.6 ms in fp32, bench/results/gpu-check.json).
    """
    if name != "auto":
        return name
    return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"


def precision_of(painter: Painter) -> str:
    """The precision faces are computed in (an ONNX graph's is fp32)."""
    dtype = painter.runner.dtype
    return next((name for name, d in PRECISIONS.items() if d == dtype), str(dtype))
