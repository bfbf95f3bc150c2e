"""Benchmark one full training step (D update + G update) in images/s, switch by switch.

Variants, each measured in the same run on the same random batch: plain fp32 (contiguous
tensors, no autocast, the classic Adam), then one speed-up switch added at a time:
channels_last, bf16 autocast (CUDA), fused Adam (CUDA), torch.compile (CUDA, opt-in), and the
trainer's path with the presets' own options (z at every layer from style_from up, the style
encoder). Prints
images/s, the speed-up over fp32, the model FLOPs utilisation (FLOPs per training image from
`torch.utils.flop_counter`, times images/s, over the GPU's dense peak: bf16 for autocast rows,
TF32 otherwise; achieved TFLOP/s on the CPU) and, on CUDA, the peak memory of each. The networks
are the presets' (presets/full.yaml on the GPU, the demo's params.yaml on the CPU).

    python bench/train.py                          # CPU at 64 px (demo networks) + GPU rows
    python bench/train.py --gpu-batches 4 16 --compile
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from devtools.scratch import preset
from spade.config import TrainConfig, load_params
from spade.dist import DistEnv
from spade.steps import train_step
from spade.throughput import peak_tflops
from spade.train import speed_flags
from spade.train_state import build_train_state

log = logging.getLogger("bench.train")

ROOT = Path(__file__).resolve().parents[1]


# The generator without the presets' own options, for every variant but the presets' row: one
# global z at the 4x4 start (style_from 4: from higher up, z would reach no layer) and no encoder.
PLAIN = {"z_every_layer": False, "use_vae": False, "style_from": 4}


def preset_nets(path: Path) -> dict:
    """The networks of a preset, with its own options (`measure` switches them)."""
    train = load_params(path).train
    return {
        "arch": train.arch.model_dump(),
        "disc": train.disc.model_dump(),
        "lambda_kl": train.lambda_kl,
    }


DEMO_NETS = preset_nets(ROOT / "params.yaml")
FULL_NETS = preset_nets(ROOT / "presets/full.yaml")
TINY_NETS = {k: preset("params.yaml", "presets/tiny.yaml")["train"][k] for k in ("arch", "disc")}


@dataclass(frozen=True)
class Variant:
    name: str
    channels_last: bool = False
    amp: bool = False
    fused: bool = False
    compile: bool = False
    presets: bool = False  # the presets' own options: z at every layer and the style encoder


# The names of two variants, which callers look rows up by.
TRAINERS_VARIANT = "+ fused Adam (the trainer's path)"
PRESETS_VARIANT = "the trainer's path with the presets' options"


def variants(device: torch.device, with_compile: bool) -> list[Variant]:
    """fp32, then each switch added on top of the previous ones (CUDA-only ones on CUDA)."""
    out = [Variant("fp32"), Variant("+ channels_last", channels_last=True)]
    if device.type == "cpu":
        out.append(Variant(PRESETS_VARIANT, channels_last=True, presets=True))
    if device.type == "cuda":
        out += [
            Variant("+ bf16 autocast", channels_last=True, amp=True),
            Variant(TRAINERS_VARIANT, channels_last=True, amp=True, fused=True),
        ]
        if with_compile:
            out.append(Variant("+ torch.compile", True, True, True, compile=True))
        out.append(Variant(PRESETS_VARIANT, True, True, True, presets=True))
    return out


def flops_per_image(state, rough, real, cfg) -> float:
    """FLOPs of one training step (both networks, forward and backward) per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(state, rough, real, cfg)
    return counter.get_total_flops() / len(rough)


def measure(
    nets: dict, variant: Variant, size: int, batch: int, device: torch.device, steps: int
) -> dict[str, float]:
    """images/s (and peak GiB on CUDA, and compile seconds) of `steps` timed steps."""
    if not variant.presets:
        nets = nets | {"arch": nets["arch"] | PLAIN}
    cfg = TrainConfig(
        **nets,
        batch_size=batch,
        lambda_vgg=0.0,
        channels_last=variant.channels_last,
        amp=variant.amp,
        compile=variant.compile,
    )
    torch.manual_seed(0)
    state = build_train_state(cfg, size, DistEnv(device=device), fused=variant.fused)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    rough, real = (
        (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=fmt)
        for _ in range(2)
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flops = flops_per_image(state, rough, real, cfg) if not variant.compile else None
    t0 = time.perf_counter()
    for _ in range(3 if device.type == "cuda" else 1):  # warm-up: cudnn autotuning, compile
        train_step(state, rough, real, cfg)
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(state, rough, real, cfg)
    sync()
    rate = steps * batch / (time.perf_counter() - t0)
    result = {"images_per_s": round(rate, 2)}
    if flops is not None:
        result["gflop_per_image"] = round(flops / 1e9, 1)
        result["tflop_per_s"] = round(flops * rate / 1e12, 3)
        peak = peak_tflops(device, variant.amp)
        if peak is not None:
            result["mfu"] = round(flops * rate / 1e12 / peak, 4)
    if device.type == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if variant.compile:
        result["compile_s"] = round(warmup_s, 1)
    return result


def compare(
    nets: dict,
    size: int,
    batch: int,
    device: torch.device,
    steps: int,
    with_compile: bool = False,
    only: set[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Every variant (or those named in `only`) at one batch size; failures (out of memory,
    compile errors) are recorded."""
    rows: dict[str, dict[str, float]] = {}
    for variant in variants(device, with_compile):
        if only is not None and variant.name not in only:
            continue
        try:
            rows[variant.name] = measure(nets, variant, size, batch, device, steps)
        except Exception as e:  # OOM or a compiler error: report, go on
            rows[variant.name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = rows.get("fp32", {}).get("images_per_s")
    compiled = rows.get("+ torch.compile", {})
    if "images_per_s" in compiled and "gflop_per_image" in rows.get(TRAINERS_VARIANT, {}):
        flops = rows[TRAINERS_VARIANT]["gflop_per_image"] * 1e9  # the same network, compiled
        compiled["tflop_per_s"] = round(flops * compiled["images_per_s"] / 1e12, 3)
        peak = peak_tflops(device, True)
        if peak is not None:
            compiled["mfu"] = round(compiled["tflop_per_s"] / peak, 4)
    for row in rows.values():
        if base and "images_per_s" in row:
            row["speedup"] = round(row["images_per_s"] / base, 2)
    return rows


def show(title: str, rows: dict[str, dict[str, float]]) -> None:
    log.info("%s", title)
    for name, row in rows.items():
        if "error" in row:
            log.info("  %-36s %s", name, row["error"])
            continue
        mem = f"  {row['peak_gib']:6.2f} GiB" if "peak_gib" in row else ""
        speedup = f"{row['speedup']:5.2f}x" if "speedup" in row else ""
        use = f"  MFU {row['mfu']:6.1%}" if "mfu" in row else ""
        use += f"  {row['tflop_per_s']:.3f} TFLOP/s" if "tflop_per_s" in row else ""
        log.info("  %-44s %8.2f img/s  %s%s%s", name, row["images_per_s"], speedup, use, mem)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu-size", type=int, default=64)
    p.add_argument("--cpu-batch", type=int, default=16)
    p.add_argument("--gpu-size", type=int, default=256)
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[4, 16])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (CUDA)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    speed_flags(torch.device("cuda"))
    cpu = torch.device("cpu")
    rows = compare(DEMO_NETS, args.cpu_size, args.cpu_batch, cpu, args.steps)
    show(f"CPU, demo networks, {args.cpu_size} px, batch {args.cpu_batch}:", rows)
    if not torch.cuda.is_available():
        log.info("no CUDA device: GPU rows skipped")
        return
    gpu = torch.device("cuda")
    log.info("GPU: %s", torch.cuda.get_device_name())
    for batch in args.gpu_batches:
        rows = compare(FULL_NETS, args.gpu_size, batch, gpu, 4 * args.steps, args.compile)
        show(f"GPU, full networks, {args.gpu_size} px, batch {batch}:", rows)


if __name__ == "__main__":
    main()
