"""The same float bytes from the same params on every Intel x86-64 CPU with AVX2.

A CPU's float results depend on more than the program: the order in which sums are taken, and
whether multiply-adds are fused, change the last bits, and training turns a changed bit into
another model. What makes that order machine-dependent on a CPU, and how `pin_cpu_numerics`
fixes each:

- ATen's vectorised kernels (reductions, element-wise maths) follow the CPU's vector width:
  pinned to their AVX2 versions (`ATEN_CPU_CAPABILITY=avx2`), which every such CPU runs.
- oneDNN's convolutions choose their blocking from the instruction set and the cache sizes, which
  differ between vendors and models: off, so ATen's own convolutions run (im2col and a GEMM).
- MKL's GEMM picks a code path per CPU: pinned to its AVX2 path (Conditional Numerical
  Reproducibility, `MKL_CBWR=AVX2`). MKL honours that on Intel CPUs only: on others it runs
  its own path whatever is asked (an AMD EPYC Zen 4 gave the same GEMM bytes under AVX2, AVX512,
  AUTO and SSE4_2). Only `MKL_CBWR=COMPATIBLE`, SSE2 code, is the same on every vendor by
  Intel's documentation, and it made the demo's training step 1.7x slower there: not worth it
  for every user. So a stage that trains or computes features on another vendor's CPU warns
  that its bytes are that CPU's; the data stages (no GEMM) match everywhere.
- Parallel reductions split their work by the thread count: a fixed count (`cpu.threads`),
  whatever the machine has.

ATen's capability and MKL's path are read once, at the first tensor operation, so this must run
before any. It holds for CPU work only: CUDA kernels (cuDNN's algorithm search, bf16, atomics)
are not bit-identical between GPU models (a stage on CUDA pins nothing), and ARM CPUs have other
kernels (each ARM CPU model is consistent with itself). `cpu.reproducible: false` keeps the
CPU's fastest kernels instead.
"""

from __future__ import annotations

import logging
import os
import platform

import torch

from spade.config import CpuConfig

log = logging.getLogger(__name__)

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def _cpuinfo(field: str) -> str | None:
    """The first CPU's `field` in /proc/cpuinfo ("" where it has none), or None where there is
    no /proc/cpuinfo (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith(field)), "")
    except OSError:
        return None
    return line.partition(":")[2].strip()


def has_avx2() -> bool:
    """Whether this is an x86-64 CPU with AVX2 and FMA (Linux: read from /proc/cpuinfo)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if (flags := _cpuinfo("flags")) is None:
        return True  # another OS on x86-64: ATen and MKL fall back by themselves if need be
    return {"avx2", "fma"} <= set(flags.split())


def cpu_vendor() -> str:
    """The CPU's vendor as Linux names it ("GenuineIntel", "AuthenticAMD"), or "" where
    /proc/cpuinfo says nothing."""
    return _cpuinfo("vendor_id") or ""


def pin_cpu_numerics(cfg: CpuConfig, device: torch.device) -> None:
    """Make CPU float results depend on the params alone (see the module docstring). A stage
    that computes on CUDA keeps the CPU's own kernels: its results are the GPU's anyway."""
    if not cfg.reproducible:
        return
    if device.type != "cpu":
        log.info("cpu.reproducible: %s results are not bit-identical across GPU models", device)
        return
    if has_avx2():
        os.environ.update(PINNED_ENV)
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != "AVX2":
            raise RuntimeError(
                f"ATen's CPU kernels were chosen ({capability}) before pin_cpu_numerics ran"
            )
        if (vendor := cpu_vendor()) not in ("GenuineIntel", ""):
            log.warning(
                "cpu.reproducible: MKL keeps its pinned path on Intel CPUs only, so on this "
                "%s CPU matrix products (training, features) give this vendor's bytes",
                vendor,
            )
    else:
        log.warning(
            "cpu.reproducible: this CPU (%s) has no AVX2, so its results match only CPUs of "
            "its own kind",
            platform.machine(),
        )
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(cfg.threads)
