"""Where a face is computed: PyTorch (the reference, and the GPU path), or on the CPU, ONNX
Runtime or OpenVINO.

A runner takes what seeded inference draws — the rough, z and the per-layer noise, all on the
CPU — and returns the face, so a seed gives the same face whichever runtime computes it (ONNX
Runtime's and OpenVINO's fp32 faces are within one level in 255 of PyTorch's; tested).

The ONNX graph is exported at load time from the model file and cached, keyed by the file's
content and the torch version (`~/.cache/spade-anime/onnx`, `SPADE_ONNX_CACHE` moves it): a
model file trained anywhere runs on ONNX Runtime without a pipeline stage, the export costs a
few seconds once, and the pipeline's outputs do not depend on the ONNX exporter's version.
`auto` measures every installed runtime on the CPU and keeps the fastest.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import io
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeAlias

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from spade.errors import UserError
from spade.files import write_bytes
from spade.networks import FaceModel, SpadeGenerator

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "openvino")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}  # PyTorch's; ONNX graphs are fp32
OPSET = 17
Graph: TypeAlias = str | bytes  # an ONNX graph: its cached file's path, or its bytes


class Runner(Protocol):
    name: str
    dtype: torch.dtype

    def __call__(self, cond: torch.Tensor, z: torch.Tensor, noise: list[torch.Tensor]):
        """(B, 3, S, S) rough in [-1, 1], (B, z_dim) z, per-layer noise → (B, 3, S, S) face."""


class TorchRunner:
    """The generator in PyTorch on its device, in `dtype` (bf16: a copy of it cast to bf16)."""

    name = "torch"

    def __init__(self, model: FaceModel, dtype: torch.dtype = torch.float32):
        self.generator = model.generator
        self.device, self.dtype = next(model.parameters()).device, dtype
        if dtype != next(model.parameters()).dtype:
            self.generator = copy.deepcopy(model.generator).to(dtype)

    @torch.inference_mode()
    def __call__(self, cond: torch.Tensor, z: torch.Tensor, noise: list[torch.Tensor]):
        move = {"device": self.device, "dtype": self.dtype}
        return self.generator(cond.to(**move), z.to(**move), noise=[n.to(**move) for n in noise])


class _Traceable(nn.Module):
    """forward(cond, z, *noise): the generator with its randomness as inputs."""

    def __init__(self, generator: SpadeGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, cond: torch.Tensor, z: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.generator(cond, z, noise=list(noise))


def zero_inputs(model: FaceModel) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A runner's inputs for one face, all zeros: for tracing and timing."""
    size = model.image_size
    noise = [torch.zeros(shape) for shape in model.generator.noise_shapes(1)]
    return torch.zeros(1, 3, size, size), torch.zeros(1, model.arch.z_dim), noise


def onnx_bytes(model: FaceModel) -> bytes:
    """The generator as an ONNX graph (fp32, batch size free), spectral norm folded in."""
    # A new instance, not a deepcopy: removing a parametrization edits the module's class,
    # which a deepcopy shares with the original.
    generator = SpadeGenerator(model.arch, model.image_size)
    generator.load_state_dict(model.generator.state_dict())
    generator.float().eval()
    for module in generator.modules():
        if parametrize.is_parametrized(module, "weight"):  # spectral norm: its eval-mode weight
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    cond, z, noise = zero_inputs(model)
    names = [f"noise{i}" for i in range(len(noise))]
    batch = {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            _Traceable(generator),
            (cond, z, *noise),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=["rough", "z", *names],
            output_names=["face"],
            dynamic_axes={name: batch for name in ["rough", "z", *names, "face"]},
        )
    return buf.getvalue()


def default_cache_dir() -> Path:
    if "SPADE_ONNX_CACHE" in os.environ:
        return Path(os.environ["SPADE_ONNX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spade-anime" / "onnx"


def onnx_graph(model: FaceModel, model_file: Path, cache_dir: Path | None = None) -> Graph:
    """The ONNX graph of `model` (loaded from `model_file`): the cached file's path, or, when
    the cache cannot be written, the graph's bytes."""
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:32]
    path = (cache_dir or default_cache_dir()) / f"{digest}-torch{torch.__version__}.onnx"
    if path.is_file():
        return str(path)
    t0 = time.perf_counter()
    data = onnx_bytes(model)
    try:
        write_bytes(path, data)
    except OSError as e:
        log.warning("cannot cache the ONNX graph in %s (%s): exporting on each start", path, e)
        return data
    log.info("exported %s to ONNX in %.1f s (cached)", model_file, time.perf_counter() - t0)
    return str(path)


def _inputs(cond: torch.Tensor, z: torch.Tensor, noise: list[torch.Tensor]) -> list:
    return [a.float().cpu().numpy() for a in (cond, z, *noise)]


class OnnxRunner:
    """The ONNX graph on ONNX Runtime's CPU provider, in fp32."""

    name = "onnx"
    dtype = torch.float32

    def __init__(self, graph: Graph):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("--runtime onnx needs onnxruntime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, cond: torch.Tensor, z: torch.Tensor, noise: list[torch.Tensor]):
        feed = dict(zip(self.names, _inputs(cond, z, noise), strict=True))
        return torch.from_numpy(self.session.run(None, feed)[0])


class OpenVinoRunner:
    """The ONNX graph compiled by OpenVINO for the CPU, one face at a time, in fp32 or bf16
    (bf16 runs on AMX units where the CPU has them: several times faster, within a few levels
    in 255 of fp32)."""

    name = "openvino"

    def __init__(self, graph: Graph, dtype: torch.dtype):
        try:
            import openvino as ov
        except ImportError:
            raise UserError("--runtime openvino needs openvino: pip install openvino") from None
        self.dtype = dtype
        core = ov.Core()
        network = core.read_model(graph)
        network.reshape({i.get_any_name(): [1, *i.get_partial_shape()[1:]] for i in network.inputs})
        hint = "bf16" if dtype == torch.bfloat16 else "f32"
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(network, "CPU", config)

    def __call__(self, cond: torch.Tensor, z: torch.Tensor, noise: list[torch.Tensor]):
        faces = [
            self.compiled(_inputs(c[None], zz[None], [n[i : i + 1] for n in noise]))[0]
            for i, (c, zz) in enumerate(zip(cond, z, strict=True))
        ]
        return torch.from_numpy(np.concatenate(faces))


GRAPH_RUNTIMES = ("onnx", "openvino")  # run the exported graph, on the CPU


def _seconds(runner: Runner, model: FaceModel) -> float:
    """The faster of two timed faces, after a warm-up."""
    cond, z, noise = zero_inputs(model)
    runner(cond, z, noise)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        runner(cond, z, noise)
        times.append(time.perf_counter() - t0)
    return min(times)


def _build(name: str, model: FaceModel, graph: Callable[[], Graph], dtype: torch.dtype) -> Runner:
    if name == "torch":
        return TorchRunner(model, dtype)
    if name == "onnx":
        return OnnxRunner(graph())
    return OpenVinoRunner(graph(), dtype)


def installed(name: str) -> bool:
    module = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}[name]
    return importlib.util.find_spec(module) is not None


def make_runner(
    name: str, model: FaceModel, model_file: Path, dtype: torch.dtype = torch.float32
) -> Runner:
    """`torch` (in `dtype`), `onnx` (fp32), `openvino` (in `dtype`) — the last two on the CPU
    only — or `auto`: PyTorch on a GPU; on the CPU the fastest installed runtime, by a
    measurement of one face each."""
    device = next(model.parameters()).device
    if name in GRAPH_RUNTIMES and device.type != "cpu":
        raise UserError(f"the {name} runtime runs on the CPU: use --device cpu or --runtime torch")
    graph = functools.cache(lambda: onnx_graph(model, model_file))  # hashed and read once
    if name != "auto":
        return _build(name, model, graph, dtype)
    if device.type != "cpu":
        return TorchRunner(model, dtype)
    runners = [_build(n, model, graph, dtype) for n in RUNTIMES[1:] if installed(n)]
    times = {r.name: _seconds(r, model) for r in runners}
    best = min(runners, key=lambda r: times[r.name])
    shown = ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in times.items())
    log.info("runtime: %s (one face: %s)", best.name, shown)
    return best
