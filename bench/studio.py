"""Benchmark the studio's face requests: server-side time per request, per model and runtime.

Starts the real server (uvicorn, as `spade studio` does) on a free loopback port with randomly
initialised generators of the presets' architectures (timing only: the weights do not change
the work): the teacher (`train.arch`) and its student (`distill.arch`) of the full preset at
256 px and of the demo at 64 px. For every model × runtime × precision, one client sends one
request at a time: server-side time per request (the Server-Timing `total`: decode + queue +
inference + PNG encode) and the model alone (`infer`), p50/p95. With `--clients`, the default
runtimes also answer 4 concurrent clients (requests/s). Rows go to bench/results/studio.json.

    python bench/studio.py                   # CPU (and CUDA when present), both presets
    python bench/studio.py --presets full --requests 20
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
from spade.runtime import installed  # noqa: E402
from spade.studio import Limits  # noqa: E402
from spade.studio.palette import default_rough, palette  # noqa: E402
from spade.studio.server import running  # noqa: E402

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


@dataclass
class Sample:
    round_trip_ms: float
    total_ms: float  # server side, from the Server-Timing header
    infer_ms: float


def giga_macs(model: FaceModel) -> float:
    """Multiply-accumulates of one face, in billions: PyTorch's FLOP counter (as bench/train.py
    uses for MFU) over one forward pass, halved."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.image_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.generator(torch.zeros(1, 3, size, size), torch.zeros(1, model.arch.z_dim))
    return counter.get_total_flops() / 2 / 1e9


class Client:
    """One keep-alive HTTP connection posting face requests."""

    def __init__(self, port: int, rough_b64: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rough = rough_b64

    def face(self, seed: int) -> Sample:
        body = json.dumps({"rough": self.rough, "seed": seed})
        t0 = time.perf_counter()
        self.conn.request("POST", "/api/face", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        response.read()
        rt = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise RuntimeError(f"face request failed: {response.status}")
        timing = dict(re.findall(r"(\w+);dur=([\d.]+)", response.getheader("Server-Timing", "")))
        return Sample(rt, float(timing["total"]), float(timing["infer"]))


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


def bench_one(
    model_file: Path, device: torch.device, runtime: str, precision: str, n: int, clients: bool
) -> dict[str, float]:
    generator = load_painter(model_file, device, runtime, precision)
    rough = default_rough(generator.size, palette(generator.recipe))
    rough_b64 = base64.b64encode(png_bytes(rough)).decode()
    with running(generator, limits=Limits(workers=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        one = Client(port, rough_b64)
        for seed in range(3):  # allocator, oneDNN/cudnn kernel choice, OpenVINO's first run
            one.face(seed)
        samples = [one.face(seed) for seed in range(n)]
        out = {
            "p50_ms": pct([s.total_ms for s in samples], 50),
            "p95_ms": pct([s.total_ms for s in samples], 95),
            "infer_p50_ms": pct([s.infer_ms for s in samples], 50),
            "round_trip_p50_ms": pct([s.round_trip_ms for s in samples], 50),
        }
        if clients:
            many = [Client(port, rough_b64) for _ in range(CLIENTS)]
            per = max(2, n // CLIENTS)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                runs = pool.map(lambda c: [c.face(s) for s in range(per)], many, chunksize=1)
                loaded = [s for run in runs for s in run]
            out["clients_req_per_s"] = round(len(loaded) / (time.perf_counter() - t0), 2)
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def run(presets: list[str], devices: list[torch.device], requests: int, clients: bool) -> list:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            for name, model in models_of(preset).items():
                path = Path(tmp) / f"{preset}-{name}.pt"
                write_generator(path, model, Recipe())
                gmac = round(giga_macs(model), 2)
                for device in devices:
                    runs = CPU_RUNS if device.type == "cpu" else CUDA_RUNS
                    for runtime, precision in runs:
                        if not installed(runtime):
                            continue
                        slow = (
                            device.type == "cpu"
                            and model.image_size >= 256
                            and (name == "teacher" and runtime == "torch")
                        )
                        n = requests or (8 if slow else 30)
                        r = bench_one(path, device, runtime, precision, n, clients)
                        row = {
                            "preset": preset,
                            "model": name,
                            "px": model.image_size,
                            "gmac": gmac,
                            "device": device.type,
                            "runtime": runtime,
                            "precision": precision,
                            "requests": n,
                        } | r
                        log.info("%s", format_row(row))
                        rows.append(row)
    return rows


def format_row(r: dict) -> str:
    return (
        f"{r['preset']:<5} {r['model']:<8} {r['px']:>4} px {r['gmac']:>6.1f} GMAC  "
        f"{r['device']:<4} {r['runtime']:<8} {r['precision']:<4}  "
        f"p50 {r['p50_ms']:>7.1f} ms  p95 {r['p95_ms']:>7.1f} ms  model {r['infer_p50_ms']:>7.1f}"
        + (
            f"  {CLIENTS} clients {r['clients_req_per_s']:.1f} req/s"
            if "clients_req_per_s" in r
            else ""
        )
    )


def ratios(rows: list[dict]) -> dict[str, float]:
    """Per preset and device: the teacher in torch fp32 over the fastest student row."""
    out = {}
    for preset in {r["preset"] for r in rows}:
        for device in {r["device"] for r in rows}:
            mine = [r for r in rows if r["preset"] == preset and r["device"] == device]
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
    p.add_argument("--requests", type=int, default=0, help="per row (default: 30, 8 when slow)")
    p.add_argument("--clients", action="store_true", help=f"also {CLIENTS} concurrent clients")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "spade"):
        logging.getLogger(name).setLevel(logging.WARNING)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    log.info("randomly initialised generators (timing only); server-side ms from Server-Timing")
    log.info("%s; load average before: %.2f", device_name(devices[0]), os.getloadavg()[0])
    rows = run(args.presets, devices, args.requests, args.clients)
    load = os.getloadavg()[0]
    log.info("load average after: %.2f (other work slows every number)", load)
    speedups = ratios(rows)
    for key, value in speedups.items():
        log.info("teacher torch fp32 / %s: %.1fx", key, value)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": {d.type: device_name(d) for d in devices},
        "torch": torch.__version__,
        "load_average_after": round(load, 2),
        "rows": rows,
        "speedup_over_teacher_torch_fp32": speedups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
