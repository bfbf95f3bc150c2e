"""Benchmark the studio's face requests: server-side time per request and requests/s.

Starts the real server (uvicorn, as `spade studio` does) on a free loopback port with a randomly
initialised generator (timing only: the weights do not change the work), then
  1. one client, one request at a time: server-side time per request (Server-Timing `total`:
     decode + queue + inference + PNG encode) and `infer` (the model alone), p50/p95;
  2. 4 concurrent clients: requests/s, and the server-side time each request saw (queue included).
Models: the demo's 64 px (ngf 16, spade_hidden 32, z_dim 64) and the full preset's 256 px
(ngf 64, spade_hidden 128, z_dim 256); on the CPU, and on CUDA when present.

    python bench/studio.py                 # CPU, 64 and 256 px (+ CUDA if present)
    python bench/studio.py --sizes 64 --requests 50
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from spade.config import GeneratorArch, Recipe
from spade.generate import FaceGenerator
from spade.images import png_bytes
from spade.networks import StyledGenerator
from spade.studio import Limits
from spade.studio.palette import default_rough, palette
from spade.studio.precision import PRECISIONS, with_precision
from spade.studio.server import bind, make_server

log = logging.getLogger("bench.studio")

ARCHS = {
    64: GeneratorArch(ngf=16, spade_hidden=32, z_dim=64),  # the demo's (params.yaml)
    256: GeneratorArch(ngf=64, spade_hidden=128, z_dim=256),  # the full preset's
}
CLIENTS = 4


@dataclass
class Sample:
    round_trip_ms: float
    total_ms: float  # server side, from the Server-Timing header
    infer_ms: float


def mega_macs(model: StyledGenerator, size: int, device: torch.device) -> float:
    """Multiply-accumulates of one face (convolutions and linear layers), in millions."""
    macs = 0

    def count(mod: torch.nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs += out.numel() * mod.in_channels // mod.groups * k
        elif isinstance(mod, torch.nn.Linear):
            macs += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    FaceGenerator(model, Recipe(), device).face(np.zeros((size, size, 3), np.uint8), 0)
    for h in hooks:
        h.remove()
    return macs / 1e6


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
    return float(np.percentile(values, q))


def bench_one(
    size: int, device: torch.device, precision: str, n: int, workers: int
) -> dict[str, float]:
    torch.manual_seed(0)
    model = StyledGenerator(ARCHS[size], size).to(device).eval().requires_grad_(False)
    macs = mega_macs(model, size, device)
    generator = with_precision(FaceGenerator(model, Recipe(), device), precision)
    rough = default_rough(size, palette(generator.recipe))
    rough_b64 = base64.b64encode(png_bytes(rough)).decode()
    sock = bind("127.0.0.1", 0)
    server = make_server(generator, "127.0.0.1", limits=Limits(workers=workers))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        warm = Client(port, rough_b64)
        for seed in range(3):  # allocator, oneDNN/cudnn kernel choice
            warm.face(seed)
        one = [warm.face(seed) for seed in range(n)]
        clients = [Client(port, rough_b64) for _ in range(CLIENTS)]
        per_client = max(1, n // CLIENTS)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            runs = pool.map(lambda c: [c.face(s) for s in range(per_client)], clients, chunksize=1)
            loaded = [s for run in runs for s in run]
        wall = time.perf_counter() - t0
    finally:
        server.should_exit = True
        thread.join(30)
    return {
        "mmac": macs,
        "p50": pct([s.total_ms for s in one], 50),
        "p95": pct([s.total_ms for s in one], 95),
        "infer": pct([s.infer_ms for s in one], 50),
        "rt": pct([s.round_trip_ms for s in one], 50),
        "rps": len(loaded) / wall,
        "loaded_p50": pct([s.total_ms for s in loaded], 50),
        "loaded_p95": pct([s.total_ms for s in loaded], 95),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return f"CPU: {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


HEADER = (
    f"{'device':<6} {'px':>4} {'prec':>4} {'GMAC':>6} | {'p50 ms':>8} {'p95 ms':>8} "
    f"{'model':>8} {'rtt':>8} | {CLIENTS} clients: {'req/s':>6} {'p50 ms':>8} {'p95 ms':>8}"
)


def row(device: torch.device, size: int, precision: str, r: dict[str, float]) -> str:
    return (
        f"{device.type:<6} {size:>4} {precision:>4} {r['mmac'] / 1000:>6.1f} | "
        f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['infer']:>8.1f} {r['rt']:>8.1f} | "
        f"{'':>10} {r['rps']:>6.2f} {r['loaded_p50']:>8.1f} {r['loaded_p95']:>8.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256], choices=sorted(ARCHS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    p.add_argument("--requests", type=int, default=0, help="per measurement (default: by size)")
    p.add_argument("--workers", type=int, default=Limits().workers, help="inferences at once")
    p.add_argument("--cpu-only", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "spade"):
        logging.getLogger(name).setLevel(logging.WARNING)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    else:
        log.info("no CUDA device: CPU only")
    log.info("randomly initialised generators (timing only); server-side ms from Server-Timing")
    log.info("load average before: %.2f", os.getloadavg()[0])
    for device in devices:
        log.info("%s\n%s", device_name(device), HEADER)
        for size in args.sizes:
            for precision in args.precisions:
                n = args.requests or (40 if size <= 64 or device.type == "cuda" else 8)
                r = bench_one(size, device, precision, n, args.workers)
                log.info("%s", row(device, size, precision, r))
    log.info("load average after: %.2f (other work slows every number)", os.getloadavg()[0])


if __name__ == "__main__":
    main()
