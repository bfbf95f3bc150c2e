"""Prove the GPU path in one command: `make gpu-check`.

Runs, in order, and writes everything to bench/results/gpu-check.json (plus a table at the end):
  1. the GPU tests (`pytest -m gpu`),
  2. a rehearsal of the full preset (presets/rehearsal.yaml: `dvc repro` from scratch in a
     temporary copy of the repository, every stage timed; its evaluation grid is kept beside
     the report, as gpu-check-rehearsal-grid.png),
  3. training throughput at 256 px, batch 4 and 16 (and 64 when it fits): fp32 against the
     trainer's fast path and each speed-up switch, with peak memory, and the estimated wall
     time of the full preset (37 epochs over 18,000 images),
  4. NVlabs SPADE's own training step at the same configuration on the same GPU (the anchor,
     from a git-ignored `.anchors/` folder, see README), and our speed-up over it,
  5. evaluation throughput: Inception features and GPU roughening, images/s,
  6. the studio's latency per face at 64 and 256 px.
Exits non-zero if any check fails. Without CUDA it says so and exits 0, unless `--cpu-smoke`
runs every step at a tiny size on the CPU (a test does, so CI keeps this script working).

    make gpu-check                          # CUDA: 6 min on one H200, and the rehearsal
    python bench/gpu_check.py --cpu-smoke   # CPU, tiny, about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from bench.train import FULL_NETS, PRESETS_VARIANT, TINY_NETS, TRAINERS_VARIANT, compare  # noqa: E402
from devtools.scratch import dvc_env, preset, scratch_repo  # noqa: E402
from spade.train import speed_flags  # noqa: E402

log = logging.getLogger("gpu-check")

RESULTS = ROOT / "bench/results/gpu-check.json"
STAGES = ("params", "demo", "sample", "roughen", "train", "distill", "features", "evaluate")
FULL_PRESET_IMAGES, FULL_PRESET_EPOCHS = 18_000, 37
ANCHOR_REPO = ROOT / ".anchors/nvlabs-spade"
ANCHOR_HARNESS = [
    ROOT / ".anchors/nvlabs_spade_step.py",
    ROOT / "../shared/anchors/nvlabs_spade_step.py",
]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    return proc.stdout + proc.stderr


# --------------------------------------------------------------------------- 1. tests


GPU_GATE_SKIP = "needs CUDA (or SPADE_GPU_SMOKE=1"  # tests/conftest.py's reason


def gpu_tests(smoke: bool) -> dict[str, Any]:
    """The tests marked `gpu`, selected by the marker (tests/conftest.py gates it: on CUDA, or
    on the CPU under SPADE_GPU_SMOKE=1)."""
    env = os.environ | ({"SPADE_GPU_SMOKE": "1"} if smoke else {})
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    out = run(cmd, ROOT, env)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    if counts.get("passed", 0) == 0 or GPU_GATE_SKIP in out:  # the gate's skip: -ra shows it
        raise RuntimeError(f"every GPU test must run here:\n{out[-2000:]}")
    return counts | {"seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------- 2. rehearsal


def rehearsal(smoke: bool, grid: Path) -> dict[str, Any]:
    """`dvc repro` of the rehearsal preset, stage by stage; its evaluation grid (rough,
    teacher, real per row) is copied to `grid`."""
    layers = ["presets/full.yaml", "presets/rehearsal.yaml", *(["presets/tiny.yaml"] * smoke)]
    params = preset(*layers)
    with tempfile.TemporaryDirectory(prefix="spade-rehearsal-") as tmp:
        repo = scratch_repo(Path(tmp) / "repo", params)
        env = dvc_env(repo)  # an empty roughen cache of its own: roughen is measured
        seconds, notes = {}, {}
        for stage in STAGES:
            t0 = time.perf_counter()
            try:
                run(["dvc", "repro", "-s", stage], repo, env, timeout=1800)
            except RuntimeError as e:
                if stage != "roughen":
                    raise
                # Record why the GPU engine failed, then finish the rehearsal on the CPU cores.
                notes["roughen_torch_error"] = str(e)[-1500:]
                params["run"]["roughen"]["backend"] = "opencv"
                (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                run(["dvc", "repro", "-s", stage], repo, env, timeout=1800)
                run(["dvc", "repro", "-s", "params"], repo, env)
            seconds[stage] = round(time.perf_counter() - t0, 1)
            log.info("rehearsal: %s %.1f s", stage, seconds[stage])
        status = run(["dvc", "status"], repo, env)
        if "up to date" not in status:
            raise RuntimeError(f"dvc status after the rehearsal:\n{status}")
        metrics = {
            name: json.loads((repo / f"metrics/{name}.json").read_text())
            for name in ("train", "eval")
        }
        grid.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / "data/eval/grid.png", grid)
    result = {"stage_seconds": seconds, "total_seconds": round(sum(seconds.values()), 1)}
    if notes:  # finished, but not the way it should have
        result["problems"] = ["roughen fell back to OpenCV", notes]
    return result | {"metrics": metrics, "grid": grid.name}


# --------------------------------------------------------------------------- 3-4. training


def training_throughput(smoke: bool, device: torch.device, with_compile: bool) -> dict[str, Any]:
    """Every switch at batch 4 (the seed's) and 16 (torch.compile at 16 only, if asked: it
    takes a minute or two to compile); fp32 and the trainer's path at 64, the largest that
    fits."""
    nets, size, steps = (TINY_NETS, 32, 1) if smoke else (FULL_NETS, 256, 8)
    results: dict[str, Any] = {}
    for batch in [2] if smoke else [4, 16]:
        compiled = with_compile and not smoke and batch == 16
        rows = compare(nets, size, batch, device, steps, with_compile=compiled)
        results[f"batch_{batch}"] = rows
    if not smoke:
        rows = compare(nets, size, 64, device, steps, only={"fp32", TRAINERS_VARIANT})
        results["batch_64"] = rows
    batches = [2] if smoke else [4]
    fast = (
        results[f"batch_{batches[0]}"].get(TRAINERS_VARIANT)
        or results[f"batch_{batches[0]}"]["+ channels_last"]
    )
    if "images_per_s" in fast:
        hours = FULL_PRESET_EPOCHS * FULL_PRESET_IMAGES / fast["images_per_s"] / 3600
        results["full_preset_hours_at_batch_4"] = round(hours, 2)
    return results


def anchor_harness() -> Path | None:
    return next((p for p in ANCHOR_HARNESS if p.is_file()), None)


def anchor(smoke: bool, device: torch.device, ours: dict[str, Any]) -> dict[str, Any]:
    """NVlabs SPADE's own step, same size, batch and GPU; our trainer's path against it."""
    harness = anchor_harness()
    if harness is None or not ANCHOR_REPO.is_dir():
        return {"skipped": "anchor code not found: see README, 'GPU check'"}
    if importlib.util.find_spec("dill") is None:
        return {"skipped": "the anchor needs the package dill: pip install dill"}
    size, batches, steps = (64, [2], 1) if smoke else (256, [4, 16], 10)
    results: dict[str, Any] = {}
    for batch in batches:
        cmd = [sys.executable, str(harness), "--repo", str(ANCHOR_REPO), "--size", str(size)]
        cmd += ["--batch", str(batch), "--steps", str(steps), "--device", device.type]
        cmd += ["--warmup", "1" if smoke else "3"]
        out = run(cmd, ROOT)
        line = next(x for x in reversed(out.splitlines()) if re.search(r"[\d.]+ img/s", x))
        rate = float(re.search(r"([\d.]+) img/s", line).group(1))
        row = {"anchor_images_per_s": rate, "line": line}
        rows = ours.get(f"batch_{batch}", {})
        for key, variant in (("ratio", TRAINERS_VARIANT), ("ratio_presets", PRESETS_VARIANT)):
            mine = rows.get(variant, {})
            if "images_per_s" in mine:
                row[f"ours_{key}_images_per_s"] = mine["images_per_s"]
                row[key] = round(mine["images_per_s"] / rate, 2)
        results[f"batch_{batch}"] = row
    return results


# --------------------------------------------------------------------------- 5. evaluation


def evaluation_throughput(smoke: bool, device: torch.device) -> dict[str, Any]:
    """Inception features, and the torch roughen engine (Triton kernels and plain torch on
    CUDA), images/s at the seed's size; the roughs are checked against OpenCV."""
    from spade.config import Recipe
    from spade.metrics.inception import extract_features
    from spade.synthetic import render_face

    n, size, batch = (4, 64, 2) if smoke else (1024, 256, 256)
    faces = np.stack([render_face(2, i % 64, size) for i in range(n)])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()  # loading, cuDNN's algorithm choice for this batch shape
    extract_features(faces[:batch], device=device, batch_size=batch, progress=False)
    sync()
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    extract_features(faces, device=device, batch_size=batch, progress=False)
    sync()
    results: dict[str, Any] = {
        "inception_steady_images_per_s": round(n / (time.perf_counter() - t0), 1),
        "inception_warmup_s": round(warmup, 2),
        "inception_batch": batch,
    }
    recipe = Recipe(median_before=3, spatial_radius=8, median_after=3) if smoke else Recipe()
    paths = {"roughen_plain_torch": False}
    if device.type == "cuda":
        paths = {"roughen_triton": True} | paths
    problems = []
    for name, triton in paths.items():
        count = min(n, 256) if triton else max(2, n // 64)  # plain torch is the slow one
        try:
            results[name] = roughen_rate(faces, recipe, device, triton, count)
        except Exception as e:
            results[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            problems.append(name)
    if problems:
        results["problems"] = problems
    return results


def roughen_rate(
    faces: np.ndarray, recipe, device: torch.device, triton: bool, n: int
) -> dict[str, Any]:
    from spade.roughen import roughen_image
    from spade.roughen.torch_engine import roughen_torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    roughen_torch(faces[:2], recipe, device, triton=triton)  # compilation, warm-up
    sync()
    first_call_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    roughs = roughen_torch(faces[:n], recipe, device, triton=triton)
    sync()
    rate = n / (time.perf_counter() - t0)
    for i in (0, n - 1):  # bit-exact with OpenCV on this machine
        if not np.array_equal(roughs[i], roughen_image(faces[i], recipe)):
            raise RuntimeError(f"image {i}: the torch roughs differ from OpenCV's")
    out = {
        "images_per_s": round(rate, 1),
        "size_px": faces.shape[1],
        "warmup_s": round(first_call_s, 1),
    }
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def studio_latency(smoke: bool, device: torch.device) -> dict[str, Any]:
    """The studio's server-side time per face (p50/p95), teacher and student, per runtime."""
    from bench.studio import Plan, run

    presets, n = (["demo"], 3) if smoke else (["full", "demo"], 40)
    plan = Plan(presets, [device], requests=n, clients=not smoke, strokes=())  # whole faces
    rows, skipped = run(plan)
    return {"rows": rows, "skipped": skipped}


# --------------------------------------------------------------------------- the report


def table(report: dict[str, Any]) -> str:
    lines = [f"GPU check on {report['device']} ({report['date']}, torch {report['torch']})"]
    for name, step in report["steps"].items():
        lines.append(f"  {name:<22} {step['status']:<8} {step.get('seconds', '')} s")
    train = report["steps"].get("training", {}).get("result", {})
    for key, rows in train.items():
        if isinstance(rows, dict):
            for variant, row in rows.items():
                rate = row.get("images_per_s", row.get("error", ""))
                mem = f"{row['peak_gib']} GiB" if "peak_gib" in row else ""
                mfu = f"MFU {row['mfu']:.1%}" if "mfu" in row else ""
                lines.append(f"    {key:<9} {variant:<44} {rate} img/s {mfu} {mem}")
    for key, row in report["steps"].get("anchor", {}).get("result", {}).items():
        for ratio in ("ratio", "ratio_presets"):
            if isinstance(row, dict) and ratio in row:
                lines.append(
                    f"    anchor {key} {ratio}: ours {row[f'ours_{ratio}_images_per_s']} vs "
                    f"NVlabs {row['anchor_images_per_s']} img/s = {row[ratio]}x"
                )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="every step, tiny, on the CPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--skip", nargs="*", default=[], help="steps to leave out")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (~2 min)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not torch.cuda.is_available() and not args.cpu_smoke:
        log.info("no CUDA device here: nothing to check (use --cpu-smoke for the CPU rehearsal)")
        return 0
    smoke = args.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    speed_flags(device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "smoke": smoke,
        "steps": {},
    }
    training: dict[str, Any] = {}
    grid = args.out.with_name(f"{args.out.stem}-rehearsal-grid.png")
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("gpu_tests", lambda: gpu_tests(smoke)),
        ("rehearsal", lambda: rehearsal(smoke, grid)),
        (
            "training",
            lambda: training.update(training_throughput(smoke, device, args.compile)) or training,
        ),
        ("anchor", lambda: anchor(smoke, device, training)),
        ("evaluation", lambda: evaluation_throughput(smoke, device)),
        ("studio", lambda: studio_latency(smoke, device)),
    ]
    for name, step in steps:
        if name in args.skip:
            continue
        log.info("== %s", name)
        t0 = time.perf_counter()
        try:
            result = step()
            status = "FAILED" if isinstance(result, dict) and result.get("problems") else "ok"
            entry = {"status": status, "result": result}
        except Exception as e:
            log.exception("%s failed", name)
            entry = {"status": "FAILED", "error": f"{type(e).__name__}: {e}"[-4000:]}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["steps"][name] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # partial results survive
    print(table(report))
    failed = [n for n, s in report["steps"].items() if s["status"] != "ok"]
    if failed:
        log.error("failed: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
