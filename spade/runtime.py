"""Where a face is computed: PyTorch (the reference, and the GPU path), or on the CPU, ONNX
Runtime or OpenVINO.

A runner takes what seeded inference draws — the rough, z and the per-layer noise, all on the
CPU — and returns the face, so a seed gives the same face whichever runtime computes it (ONNX
Runtime's and OpenVINO's fp32 faces are within one level in 255 of PyTorch's; tested).

The ONNX graph is exported at load time from the loaded generator and cached
(`~/.cache/spade-anime/onnx`, `SPADE_ONNX_CACHE` moves it), keyed by everything the graph
depends on: the generator's weights, architecture and size as loaded, the source of the network
and export code, the opset and the torch version. Each graph is stored with its SHA-256 and
verified on every load (a damaged one is exported again, with a warning); the `CACHE_KEEP` most
recently used graphs are kept. A model file trained anywhere runs on ONNX Runtime without a
pipeline stage, the export costs a few seconds once, and the pipeline's outputs do not depend on
the ONNX exporter's version. `auto` measures every runtime that loads on the CPU and keeps the
fastest.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from spade import networks
from spade.errors import UserError
from spade.files import user_cache_dir, write_bytes
from spade.networks import FaceModel, SpadeGenerator

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "openvino")
# fp32 as trained, or bf16 where the hardware computes it: PyTorch keeps a bf16 copy of the
# generator, OpenVINO compiles its graph for bf16 (1.5-2x faster at 256 px on CPUs with AMX; faces
# within a few levels in 255 of fp32). ONNX Runtime's graphs are fp32.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
OPSET = 17
CACHE_KEEP = 8  # graphs kept in the cache, most recently used first (a 256 px student's: 34 MB)


class Runner(Protocol):
    name: str
    dtype: torch.dtype

    def __call__(
        self,
        cond: torch.Tensor,
        z: torch.Tensor,
        noise: list[torch.Tensor],
        masks: torch.Tensor | None = None,
    ):
        """(B, 3, S, S) rough in [-1, 1], (B, z_dim) z — or (B, K, z_dim) region codes with
        their (B, K, S, S) `masks` — and per-layer noise → (B, 3, S, S) face."""


class TorchRunner:
    """The generator in PyTorch on its device, in `dtype` (bf16: a copy of it cast to bf16)."""

    name = "torch"

    def __init__(self, model: FaceModel, dtype: torch.dtype = torch.float32):
        self.generator = model.generator
        self.device, self.dtype = next(model.parameters()).device, dtype
        if dtype != next(model.parameters()).dtype:
            self.generator = copy.deepcopy(model.generator).to(dtype)

    @torch.inference_mode()
    def __call__(
        self,
        cond: torch.Tensor,
        z: torch.Tensor,
        noise: list[torch.Tensor],
        masks: torch.Tensor | None = None,
    ):
        move = {"device": self.device, "dtype": self.dtype}
        noise = [n.to(**move) for n in noise]
        masks = masks.to(**move) if masks is not None else None
        return self.generator(cond.to(**move), z.to(**move), noise=noise, masks=masks)


class _Traceable(nn.Module):
    """forward(cond, z, *noise): the generator with its randomness as inputs."""

    def __init__(self, generator: SpadeGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, cond: torch.Tensor, z: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.generator(cond, z, noise=list(noise))


class _RegionTraceable(_Traceable):
    """forward(cond, z, masks, *noise): with region codes (z: (B, K, z_dim), masks: (B, K, S,
    S)) as inputs too."""

    def forward(
        self, cond: torch.Tensor, z: torch.Tensor, masks: torch.Tensor, *noise: torch.Tensor
    ) -> torch.Tensor:
        return self.generator(cond, z, noise=list(noise), masks=masks)


def zero_inputs(model: FaceModel) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A runner's inputs for one face, all zeros: for tracing and timing."""
    size = model.image_size
    noise = [torch.zeros(shape) for shape in model.generator.noise_shapes(1)]
    return torch.zeros(1, 3, size, size), torch.zeros(1, model.arch.z_dim), noise


def onnx_bytes(model: FaceModel, codes: int = 1) -> bytes:
    """The generator as an ONNX graph (fp32, batch size free), spectral norm folded in.

    One graph per number of style codes: the plain one (`codes` 1) takes one (B, z_dim) code;
    a regional one takes (B, codes, z_dim) codes and their (B, codes, S, S) masks. A fixed
    count writes each region as one multiply-add per SPADE layer (`StyleMap._per_region`), and
    painting with one code, most of the work, skips the masks altogether."""
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
    axes = {name: batch for name in ["rough", "z", *names, "face"]}
    module, inputs, input_names = _Traceable(generator), (cond, z, *noise), ["rough", "z", *names]
    if codes > 1:
        z = torch.zeros(1, codes, model.arch.z_dim)
        masks = torch.full((1, codes, model.image_size, model.image_size), 1 / codes)
        module, inputs = _RegionTraceable(generator), (cond, z, masks, *noise)
        input_names = ["rough", "z", "masks", *names]
        axes["masks"] = batch
    buf = io.BytesIO()
    # fp32 whatever the caller runs under: a regional graph is exported when a face first
    # asks for it, inside the studio's bf16 autocast on CPUs with bf16 units
    with warnings.catch_warnings(), torch.autocast("cpu", enabled=False):
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            module,
            inputs,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=["face"],
            dynamic_axes=axes,
        )
    return buf.getvalue()


def graph_key(model: FaceModel) -> str:
    """What the exported graph depends on: the generator's weights, architecture and size as
    loaded (not the file, which may have changed since), the source of the network and export
    code, the opset and the torch version."""
    h = hashlib.sha256()
    for source in (networks.__file__, __file__):
        h.update(Path(source).read_bytes())
    setup = [model.arch.model_dump(), model.image_size, OPSET, torch.__version__]
    h.update(json.dumps(setup, sort_keys=True).encode())
    for name, tensor in model.generator.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy())
    return h.hexdigest()[:32]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cached(path: Path) -> bytes | None:
    """The graph at `path` if it matches the SHA-256 stored beside it; a damaged one (truncated,
    replaced, a link to another file) is None, with a warning."""
    if not os.path.lexists(path):
        return None
    try:
        data, expected = path.read_bytes(), path.with_suffix(".sha256").read_text().strip()
    except OSError as e:
        data, expected = b"", str(e)
    if _sha256(data) != expected:
        log.warning("the cached ONNX graph %s is damaged: exporting it again", path)
        return None
    with contextlib.suppress(OSError):  # a read-only cache: used, not marked
        os.utime(path)  # recently used: kept by `_evict`
    return data


def _evict(folder: Path, keep: int) -> None:
    """Remove all but the `keep` most recently used graphs (and their checksums)."""
    with contextlib.suppress(OSError):  # another process evicting at the same time
        graphs = sorted(folder.glob("*.onnx"), key=lambda p: p.lstat().st_mtime, reverse=True)
        for old in graphs[keep:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)


def onnx_graph(model: FaceModel, cache_dir: Path | None = None, codes: int = 1) -> bytes:
    """The ONNX graph of `model` for `codes` style codes (`onnx_bytes`): from the cache when a
    verified copy is there, else exported and cached (when the cache cannot be written —
    read-only, full — exported on each start)."""
    folder = cache_dir or user_cache_dir("onnx")
    path = folder / f"{graph_key(model)}{f'-codes{codes}' if codes > 1 else ''}.onnx"
    if (data := _cached(path)) is not None:
        return data
    t0 = time.perf_counter()
    data = onnx_bytes(model, codes)
    try:  # the checksum first: a graph never appears without one
        write_bytes(path.with_suffix(".sha256"), f"{_sha256(data)}\n".encode())
        write_bytes(path, data)
    except (OSError, UserError) as e:  # write_bytes: a full disk is a UserError
        log.warning("cannot cache the ONNX graph in %s (%s): exporting on each start", folder, e)
        return data
    _evict(folder, CACHE_KEEP)
    log.info("exported the generator to ONNX in %.1f s (cached)", time.perf_counter() - t0)
    return data


def _import(module: str, runtime: str) -> ModuleType:
    """`module` for `--runtime runtime`, or one line that says whether it is missing or broken."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == module:
            raise UserError(f"--runtime {runtime} needs {module}: pip install {module}") from None
        raise UserError(
            f"{module} is installed but fails to import ({e}): "
            f"pip install --force-reinstall {module}"
        ) from None


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (AMX / AVX512-BF16 CPUs, Ampere+ GPUs);
    elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if not _onednn_may_use_bf16():
        return False
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


def precision_of(runner: Runner) -> str:
    """The precision `runner` computes faces in (an ONNX graph's is fp32; OpenVINO's is fp32 on
    a CPU without native bf16, whatever was asked)."""
    return next((name for name, d in PRECISIONS.items() if d == runner.dtype), str(runner.dtype))


def _onednn_may_use_bf16() -> bool:
    """False where `ONEDNN_MAX_CPU_ISA` caps oneDNN (torch's and OpenVINO's) below its bf16
    instruction sets, e.g. at AVX2: asking it for bf16 then fails instead of computing."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    cap = cap.upper()
    return cap in ("ALL", "DEFAULT") or any(k in cap for k in ("BF16", "FP16", "AMX", "AVX10"))


Graphs = Callable[[int], bytes]  # number of style codes → the ONNX graph (`onnx_bytes`)


def _inputs(
    cond: torch.Tensor, z: torch.Tensor, noise: list[torch.Tensor], masks: torch.Tensor | None
) -> tuple[int, dict[str, np.ndarray]]:
    """The number of style codes, which picks the graph, and the graphs' inputs by name:
    rough, z, masks (two codes or more), noise0, noise1… One code under its mask (which is
    all ones: the masks sum to 1) is the plain face. A graph keeps only the inputs its model
    reads (no masks without per-layer style), so runners feed the names their graph has."""
    if masks is not None and masks.shape[1] == 1:
        z, masks = z[:, 0], None
    codes = 1 if masks is None else masks.shape[1]
    named = {"rough": cond, "z": z} | ({"masks": masks} if masks is not None else {})
    named |= {f"noise{i}": n for i, n in enumerate(noise)}
    return codes, {k: v.float().cpu().numpy() for k, v in named.items()}


class OnnxRunner:
    """The ONNX graphs on ONNX Runtime's CPU provider, in fp32: the plain one loaded at once,
    a regional one when a face first has that many style codes."""

    name = "onnx"
    dtype = torch.float32

    def __init__(self, graphs: Graphs):
        self.ort = _import("onnxruntime", self.name)
        self.graphs = graphs
        self.by_codes: dict[int, object] = {}  # sessions by number of style codes (1: plain)
        self._session(codes=1)

    def _session(self, codes: int):
        if codes not in self.by_codes:
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.log_severity_level = 3  # errors only
            graph, cpu = self.graphs(codes), ["CPUExecutionProvider"]
            self.by_codes[codes] = self.ort.InferenceSession(graph, options, providers=cpu)
        return self.by_codes[codes]

    def __call__(
        self,
        cond: torch.Tensor,
        z: torch.Tensor,
        noise: list[torch.Tensor],
        masks: torch.Tensor | None = None,
    ):
        codes, given = _inputs(cond, z, noise, masks)
        session = self._session(codes)
        feed = {i.name: given[i.name] for i in session.get_inputs()}
        return torch.from_numpy(session.run(None, feed)[0])


class OpenVinoRunner:
    """The ONNX graph compiled by OpenVINO for the CPU, one face at a time, in fp32 or bf16
    (bf16 runs on AMX units where the CPU has them: several times faster, within a few levels
    in 255 of fp32; a CPU without native bf16 computes fp32, and `dtype` says so).

    Every shape is static, so OpenVINO plans each layer once: the plain graph is compiled for
    one face at load time, and a regional one when a face first has that many style codes."""

    name = "openvino"

    def __init__(self, graphs: Graphs, dtype: torch.dtype):
        self.ov = _import("openvino", self.name)
        if dtype == torch.bfloat16 and not native_bf16(torch.device("cpu")):
            log.warning("this CPU does not compute bf16 natively: OpenVINO computes in fp32")
            dtype = torch.float32
        self.core = self.ov.Core()
        self.graphs = graphs
        self.config = {
            "INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.by_codes: dict[int, object] = {}  # by number of style codes (1: the plain graph)
        computed = self._compiled(1).get_property("INFERENCE_PRECISION_HINT")  # what it runs in
        self.dtype = torch.bfloat16 if computed == self.ov.Type.bf16 else torch.float32

    def _compiled(self, codes: int):
        """The graph for `codes` style codes, compiled for one face."""
        if codes not in self.by_codes:
            network = self.core.read_model(self.graphs(codes))
            network.reshape(
                {i.get_any_name(): [1, *i.get_partial_shape()[1:]] for i in network.inputs}
            )
            self.by_codes[codes] = self.core.compile_model(network, "CPU", self.config)
        return self.by_codes[codes]

    def __call__(
        self,
        cond: torch.Tensor,
        z: torch.Tensor,
        noise: list[torch.Tensor],
        masks: torch.Tensor | None = None,
    ):
        faces = []
        for i in range(len(cond)):
            one = slice(i, i + 1)
            codes, given = _inputs(
                cond[one],
                z[one],
                [n[one] for n in noise],
                masks[one] if masks is not None else None,
            )
            compiled = self._compiled(codes)
            feed = [given[(i.get_names() & given.keys()).pop()] for i in compiled.inputs]
            faces.append(compiled(feed)[0])
        return torch.from_numpy(np.concatenate(faces))


GRAPH_RUNTIMES = ("onnx", "openvino")  # run the exported graph, on the CPU


def fastest_seconds(fn: Callable[[], object], repeats: int = 2) -> float:
    """The fastest of `repeats` timed calls of `fn`, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _seconds(runner: Runner, model: FaceModel) -> float:
    """The faster of two timed faces, after a warm-up."""
    cond, z, noise = zero_inputs(model)
    runner(cond, z, noise)
    return fastest_seconds(lambda: runner(cond, z, noise))


def _build(name: str, model: FaceModel, graphs: Graphs, dtype: torch.dtype) -> Runner:
    if name == "torch":
        return TorchRunner(model, dtype)
    if name == "onnx":
        return OnnxRunner(graphs)
    return OpenVinoRunner(graphs, dtype)


def installed(name: str) -> bool:
    module = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}[name]
    return importlib.util.find_spec(module) is not None


def make_runner(name: str, model: FaceModel, dtype: torch.dtype = torch.float32) -> Runner:
    """`torch` (in `dtype`), `onnx` (fp32), `openvino` (in `dtype`) — the last two on the CPU
    only — or `auto`: PyTorch on a GPU; on the CPU the fastest installed runtime, by a
    measurement of one face each (a runtime that fails to load is skipped, with a warning)."""
    device = next(model.parameters()).device
    if name in GRAPH_RUNTIMES and device.type != "cpu":
        raise UserError(f"the {name} runtime runs on the CPU: use --device cpu or --runtime torch")
    graph = functools.cache(lambda codes: onnx_graph(model, codes=codes))  # once each
    if name != "auto":
        return _build(name, model, graph, dtype)
    if device.type != "cpu":
        return TorchRunner(model, dtype)
    runners = [TorchRunner(model, dtype)]
    for other in GRAPH_RUNTIMES:
        if installed(other):
            try:
                runners.append(_build(other, model, graph, dtype))
            except Exception as e:  # a broken install, or a graph it cannot load: not fatal here
                log.warning("runtime %s skipped: %s", other, e)
    times = {r.name: _seconds(r, model) for r in runners}
    best = min(runners, key=lambda r: times[r.name])
    shown = ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in times.items())
    log.info("runtime: %s (one face: %s)", best.name, shown)
    return best
