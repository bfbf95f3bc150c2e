"""The studio's numeric precision: fp32 as trained, or bf16 where the hardware computes it."""

from __future__ import annotations

import torch

from spade.generate import FaceGenerator

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def with_precision(generator: FaceGenerator, precision: str) -> FaceGenerator:
    """The generator as trained (fp32), or with its weights cast to bf16 in place (bf16): the
    studio then runs every forward in bf16, 1.5–2× faster at 256 px on CPUs with AMX. Faces
    differ from fp32 ones by about one level in 255."""
    generator.model.to(PRECISIONS[precision])
    return generator


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (AMX / AVX512-BF16 CPUs, Ampere+ GPUs);
    elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # torch has no public query for the CPU's bf16 support
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' → bf16 on CPUs that compute it in hardware, else fp32; 'fp32' and 'bf16' as given.

    Not on GPUs: one face at a time is launch-bound there, and bf16 measured slower (H100,
    256 px: 28.9 ms against 15.6 ms in fp32, bench/results/gpu-check.json).
    """
    if name != "auto":
        return name
    return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"


def precision_of(generator: FaceGenerator) -> str:
    dtype = next(generator.model.parameters()).dtype
    return next((name for name, d in PRECISIONS.items() if d == dtype), str(dtype))
