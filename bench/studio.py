"""Benchmark the studio's face requests: server-side time per request, per model and runtime.

Starts the real server (uvicorn, as `spade studio` does) on a free loopback port with randomly
initialised generators of the presets' architectures (timing only: the weights do not change
the work): the teacher (`train.arch`) and its student (`distill.arch`) of the full preset at
256 px and of the demo at 64 px. For every model × runtime × precision, one client sends one
request at a time: server-side time per request (the Server-Timing `total`: decode + queue +
inference + PNG encode) and the model alone (`infer`), p50/p95. These are the "full" rows: a new
face every time. The "stroke" rows (PyTorch, the runtime of incremental redraws) paint as a person
does: one page, one seed, each request adds a brush stroke that changes 1 %, 3 % or 10 % of the
canvas (`spade.strokes`), so the studio redraws incrementally; each is compared with the full
rows of the same model measured in this run. bf16 rows run only where the CPU computes bf16
natively (elsewhere bf16 is emulated, and the teacher's row alone took over 10 minutes); the
output names the rows skipped and why. With `--clients`, the default runtimes also answer 4
concurrent clients (requests/s). Rows go to bench/results/studio.json.

Requests per row follow `--seconds-per-row` (5 to 30 requests), so a run of both presets on a
2-core CPU stays within about 10 minutes.

    python bench/studio.py                   # CPU (and CUDA when present), both presets
    python bench/studio.py --presets full --requests 20
    python bench/studio.py --presets full --seconds-per-row 5   # quick
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from spade.checkpoint import write_generator  # noqa: E402
from spade.config import Recipe, load_params  # noqa: E402
from spade.distill import student_arch  # noqa: E402
from spade.images import png_bytes  # noqa: E402
from spade.networks import FaceModel  # noqa: E402
from spade.painter import load_painter  # noqa: E402
from spade.runtime import installed, native_bf16  # noqa: E402
from spade.strokes import brush_stroke  # noqa: E402
from spade.studio import Limits, torch_thread  # noqa: E402
from spade.studio.palette import default_rough, palette  # noqa: E402
from spade.studio.server import running  # noqa: E402
from spade.throughput import forward_flops  # noqa: E402

log = logging.getLogger("bench.studio")

RESULTS = ROOT / "bench/results/studio.json"
PRESETS = {"full": ROOT / "presets/full.yaml", "demo": ROOT / "params.yaml"}
CLIENTS = 4
# (runtime, precision) per device: PyTorch everywhere; the exported graph on the CPU.
CPU_RUNS = [
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("onnx", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
]
CUDA_RUNS = [("torch", "fp32"), ("torch", "bf16")]
STROKES = (0.01, 0.03, 0.10)  # fractions of the canvas one stroke changes
MIN_REQUESTS, MAX_REQUESTS = 5, 30
MODELS = ("teacher", "student")


@dataclass
class Sample:
    round_trip_ms: float
    total_ms: float  # server side, from the Server-Timing header
    infer_ms: float
    redraw: str = ""  # the X-Redraw header: incremental or full, and the fractions


def giga_macs(model: FaceModel) -> float:
    """Multiply-accumulates of one face, in billions: PyTorch's FLOP counter over one forward
    pass (`spade.throughput.forward_flops`, as training's MFU counts), halved."""
    size = model.image_size
    rough, z = torch.zeros(1, 3, size, size), torch.zeros(1, model.arch.z_dim)
    return forward_flops(model.generator, rough, z) / 2 / 1e9


class Client:
    """One keep-alive HTTP connection posting face requests."""

    def __init__(self, port: int, rough_b64: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rough = rough_b64

    def face(self, seed: int, page: str | None = None) -> Sample:
        request = {"rough": self.rough, "seed": seed} | ({"page": page} if page else {})
        body = json.dumps(request)
        t0 = time.perf_counter()
        self.conn.request("POST", "/api/face", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        response.read()
        rt = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise RuntimeError(f"face request failed: {response.status}")
        timing = dict(re.findall(r"(\w+);dur=([\d.]+)", response.getheader("Server-Timing", "")))
        redraw = response.getheader("X-Redraw", "")
        return Sample(rt, float(timing["total"]), float(timing["infer"]), redraw)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def models_of(preset: str) -> dict[str, FaceModel]:
    """The preset's teacher and student, randomly initialised (fixed seed)."""
    params = load_params(PRESETS[preset])
    teacher_arch, size = params.train.arch, params.sample.image_size
    torch.manual_seed(0)
    teacher = FaceModel(teacher_arch, size).eval().requires_grad_(False)
    student = FaceModel(student_arch(teacher_arch, params.distill), size)
    return {"teacher": teacher, "student": student.eval().requires_grad_(False)}


def b64_png(img: np.ndarray) -> str:
    return base64.b64encode(png_bytes(img)).decode()


def count_for(seconds_each: float, n: int, seconds_per_row: float) -> int:
    """Requests for a row: `n` when given, else what fits in `seconds_per_row`."""
    if n:
        return n
    return int(np.clip(seconds_per_row / max(seconds_each, 1e-3), MIN_REQUESTS, MAX_REQUESTS))


def summary(samples: list[Sample]) -> dict[str, float]:
    return {
        "p50_ms": pct([s.total_ms for s in samples], 50),
        "p95_ms": pct([s.total_ms for s in samples], 95),
        "infer_p50_ms": pct([s.infer_ms for s in samples], 50),
        "round_trip_p50_ms": pct([s.round_trip_ms for s in samples], 50),
    }


def recomputed(sample: Sample) -> float:
    """The fraction of a face's multiply-adds an incremental redraw computed (1 when full)."""
    found = re.search(r"recomputed=([\d.]+)", sample.redraw)
    return float(found.group(1)) if found and sample.redraw.startswith("incremental") else 1.0


def bench_strokes(
    port: int, rough: np.ndarray, colours: list, fraction: float, n: int
) -> dict[str, float]:
    """One page painted stroke by stroke: each request adds a stroke changing `fraction`."""
    rng = np.random.default_rng(int(fraction * 1000))
    client = Client(port, b64_png(rough))
    page = f"bench{int(fraction * 1000)}"
    client.face(0, page)  # the page's first face: a full redraw

    def stroke() -> Sample:
        nonlocal rough
        rough = brush_stroke(rough, fraction, colours[int(rng.integers(len(colours)))], rng)
        client.rough = b64_png(rough)
        return client.face(0, page)

    for _ in range(2):  # warm-up: the tile shapes' first runs
        stroke()
    samples = [stroke() for _ in range(n)]
    share = [recomputed(s) for s in samples]
    return summary(samples) | {
        "incremental_share": round(sum(s.redraw.startswith("incremental") for s in samples) / n, 2),
        "recomputed_p50": round(float(np.median(share)), 3),
    }


def bench_one(
    model_file: Path,
    device: torch.device,
    runtime: str,
    precision: str,
    n: int,
    clients: bool,
    seconds_per_row: float = 20.0,
    strokes: tuple[float, ...] = (),
) -> list[dict[str, float]]:
    """The full row of one model × runtime × precision (and its stroke rows, when asked)."""
    generator = torch_thread.call(load_painter, model_file, device, runtime, precision)
    colours = [c.rgb for c in palette(generator.recipe)]
    rough = default_rough(generator.size, palette(generator.recipe))
    rough_b64 = b64_png(rough)
    with running(generator, limits=Limits(workers=1), incremental="on") as url:
        port = int(url.rsplit(":", 1)[1])
        one = Client(port, rough_b64)
        t0 = time.perf_counter()
        for seed in range(3):  # allocator, oneDNN/cudnn kernel choice, OpenVINO's first run
            one.face(seed)
        count = count_for((time.perf_counter() - t0) / 3, n, seconds_per_row)
        samples = [one.face(seed) for seed in range(count)]
        out = summary(samples) | {"kind": "full", "requests": count}
        if clients:
            many = [Client(port, rough_b64) for _ in range(CLIENTS)]
            per = max(2, n // CLIENTS)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                runs = pool.map(lambda c: [c.face(s) for s in range(per)], many, chunksize=1)
                loaded = [s for run in runs for s in run]
            out["clients_req_per_s"] = round(len(loaded) / (time.perf_counter() - t0), 2)
        rows = [out]
        for fraction in strokes:  # a stroke costs about a full face at most
            k = count_for(out["p50_ms"] / 1000, n, seconds_per_row)
            row = bench_strokes(port, rough, colours, fraction, k)
            rows.append(row | {"kind": "stroke", "stroke": fraction, "requests": k})
    return rows


def skip_reason(device: torch.device, runtime: str, precision: str) -> str | None:
    """Why a row is not run here, or None."""
    if not installed(runtime):
        return f"{runtime} is not installed"
    if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        return "this CPU does not compute bf16 natively (it would be emulated, slower than fp32)"
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


@dataclass
class Plan:
    """What to measure: presets, devices, rows' sizes and which stroke rows."""

    presets: list[str]
    devices: list[torch.device]
    requests: int = 0  # per row; 0: what fits in seconds_per_row
    clients: bool = False
    seconds_per_row: float = 20.0
    strokes: tuple[float, ...] = STROKES
    models: tuple[str, ...] = ("teacher", "student")


def run(plan: Plan) -> tuple[list[dict], list[dict]]:
    """(rows, skipped): every row measured, and every row skipped with its reason."""
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in plan.presets:
            for name, model in torch_thread.call(models_of, preset).items():
                if name not in plan.models:
                    continue
                path = Path(tmp) / f"{preset}-{name}.pt"
                torch_thread.call(write_generator, path, model, Recipe())
                gmac = round(torch_thread.call(giga_macs, model), 2)
                for device in plan.devices:
                    runs = CPU_RUNS if device.type == "cpu" else CUDA_RUNS
                    for runtime, precision in runs:
                        what = {"preset": preset, "model": name, "px": model.image_size}
                        what |= {"gmac": gmac, "device": device.type, "runtime": runtime}
                        what |= {"precision": precision}
                        if why := skip_reason(device, runtime, precision):
                            skipped.append(what | {"why": why})
                            log.info(
                                "skipped %s %s %s %s: %s", preset, name, runtime, precision, why
                            )
                            continue
                        strokes = plan.strokes if (runtime, precision) == ("torch", "fp32") else ()
                        measured = bench_one(
                            path,
                            device,
                            runtime,
                            precision,
                            plan.requests,
                            plan.clients,
                            plan.seconds_per_row,
                            strokes,
                        )
                        for r in measured:
                            row = what | r
                            log.info("%s", format_row(row))
                            rows.append(row)
    return rows, skipped


def format_row(r: dict) -> str:
    kind = "full" if r["kind"] == "full" else f"stroke {r['stroke']:>4.0%}"
    line = (
        f"{r['preset']:<5} {r['model']:<8} {r['px']:>4} px {r['gmac']:>6.1f} GMAC  "
        f"{r['device']:<4} {r['runtime']:<8} {r['precision']:<4} {kind:<11} "
        f"p50 {r['p50_ms']:>7.1f} ms  p95 {r['p95_ms']:>7.1f} ms  model {r['infer_p50_ms']:>7.1f}"
    )
    if "clients_req_per_s" in r:
        line += f"  {CLIENTS} clients {r['clients_req_per_s']:.1f} req/s"
    if r["kind"] == "stroke":
        line += f"  recomputed {r['recomputed_p50']:.0%} of a face's MACs"
    return line


def stroke_ratios(rows: list[dict]) -> list[dict]:
    """Each stroke row's p50 over the full rows' of the same model, preset and device: the same
    runtime's, and the fastest fp32 runtime's (strokes are fp32: the goal compares fp32)."""
    out = []
    for r in rows:
        if r["kind"] != "stroke":
            continue
        same = {k: r[k] for k in ("preset", "model", "device")}
        full = [f for f in rows if f["kind"] == "full" and all(f[k] == v for k, v in same.items())]
        own = next(f for f in full if (f["runtime"], f["precision"]) == ("torch", "fp32"))
        best = min((f for f in full if f["precision"] == "fp32"), key=lambda f: f["p50_ms"])
        out.append(
            same
            | {
                "stroke": r["stroke"],
                "over_torch_fp32_full": round(r["p50_ms"] / own["p50_ms"], 3),
                "fastest_full": f"{best['runtime']} {best['precision']}",
                "over_fastest_fp32_full": round(r["p50_ms"] / best["p50_ms"], 3),
            }
        )
    return out


def ratios(rows: list[dict]) -> dict[str, float]:
    """Per preset and device: the teacher in torch fp32 over the fastest student row."""
    out = {}
    for preset in {r["preset"] for r in rows}:
        for device in {r["device"] for r in rows}:
            mine = [
                r
                for r in rows
                if r["preset"] == preset and r["device"] == device and r["kind"] == "full"
            ]
            base = [
                r
                for r in mine
                if r["model"] == "teacher" and r["runtime"] == "torch" and r["precision"] == "fp32"
            ]
            students = [r for r in mine if r["model"] == "student"]
            if base and students:
                best = min(students, key=lambda r: r["p50_ms"])
                key = f"{preset}_{device}_student_{best['runtime']}_{best['precision']}"
                out[key] = round(base[0]["p50_ms"] / best["p50_ms"], 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["full", "demo"], choices=sorted(PRESETS))
    p.add_argument("--requests", type=int, default=0, help="per row (default: --seconds-per-row)")
    p.add_argument(
        "--seconds-per-row",
        type=float,
        default=20.0,
        help=f"requests per row: what fits in this time ({MIN_REQUESTS} to {MAX_REQUESTS})",
    )
    p.add_argument(
        "--strokes",
        type=float,
        nargs="*",
        default=list(STROKES),
        help="stroke rows: fractions of the canvas one stroke changes (none: no stroke rows)",
    )
    p.add_argument("--models", nargs="+", default=["teacher", "student"], choices=MODELS)
    p.add_argument("--clients", action="store_true", help=f"also {CLIENTS} concurrent clients")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.requests < 0 or args.seconds_per_row <= 0 or any(not 0 < f <= 1 for f in args.strokes):
        p.error("--requests >= 0, --seconds-per-row > 0 and --strokes in (0, 1]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "spade"):
        logging.getLogger(name).setLevel(logging.WARNING)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    log.info("randomly initialised generators (timing only); server-side ms from Server-Timing")
    log.info("%s; load average before: %.2f", device_name(devices[0]), os.getloadavg()[0])
    log.info("CPU: %s", cpu_isa())
    plan = Plan(
        args.presets,
        devices,
        args.requests,
        args.clients,
        args.seconds_per_row,
        tuple(args.strokes),
        tuple(args.models),
    )
    t0 = time.perf_counter()
    rows, skipped = run(plan)
    load = os.getloadavg()[0]
    log.info("load average after: %.2f (other work slows every number)", load)
    speedups = ratios(rows)
    for key, value in speedups.items():
        log.info("teacher torch fp32 / %s: %.1fx", key, value)
    strokes = stroke_ratios(rows)
    for r in strokes:
        log.info(
            "%s %s stroke %.0f%%: %.2f of torch fp32's full face, %.2f of the fastest fp32 (%s)",
            r["preset"],
            r["model"],
            100 * r["stroke"],
            r["over_torch_fp32_full"],
            r["over_fastest_fp32_full"],
            r["fastest_full"],
        )
    for r in skipped:
        log.info(
            "skipped: %s %s %s %s: %s",
            r["preset"],
            r["model"],
            r["runtime"],
            r["precision"],
            r["why"],
        )
    log.info("took %.0f s", time.perf_counter() - t0)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": {d.type: device_name(d) for d in devices},
        "cpu_isa": cpu_isa(),
        "torch": torch.__version__,
        "load_average_after": round(load, 2),
        "rows": rows,
        "skipped": skipped,
        "speedup_over_teacher_torch_fp32": speedups,
        "stroke_over_full": strokes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)


def cpu_isa() -> str:
    """What the CPU computes with: torch's kernels, oneDNN's cap and native bf16."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "not capped"
    return (
        f"torch kernels {torch.backends.cpu.get_cpu_capability()}, oneDNN {cap}, "
        f"native bf16 {'yes' if native_bf16(torch.device('cpu')) else 'no'}"
    )


if __name__ == "__main__":
    main()
