"""Benchmark post-training int8 for the student: latency and KID against fp32, in one run.

int8 is ONNX Runtime's static quantiser on the exported graph (QDQ: int8 weights per output
channel, uint8 activations with ranges calibrated on roughs), run by OpenVINO (which executes
QDQ graphs in int8) and ONNX Runtime.

- **Latency**: the student of a preset (random weights: timing only; calibrated on 8 random
  roughs) at its size, one face at a time, fp32 and int8 timed in alternating rounds, each by
  its fastest round.
- **Quality** (`--model-file`, by default the pipeline's `models/student.pt` when it is
  there): the trained student calibrated on the pipeline's training roughs; its seed faces for
  the test roughs, the same z and noise in fp32 and in int8, through OpenVINO; the KID of each
  against the real test faces (as `evaluate` computes it), and how far apart the faces are.

    python bench/int8.py                               # full preset at 256 px + the demo student
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/int8.py --skip-quality   # as an AVX2-only CPU computes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench.regions import student
from spade import paths
from spade.data import to_images, to_model
from spade.inference import seeded
from spade.networks import FaceModel
from spade.runtime import onnx_bytes

Feed = dict[str, np.ndarray]


def feeds(model: FaceModel, roughs: np.ndarray, seed: int) -> Iterator[Feed]:
    """One plain graph input per uint8 rough: the rough, z and the per-layer noise, drawn from
    `seed` one face at a time."""
    rng, cpu = seeded(seed), torch.device("cpu")
    for rough in roughs:
        z = rng.randn(1, model.arch.z_dim, device=cpu)
        noise = model.generator.draw_noise(rng, 1, cpu)
        feed = {"rough": to_model(rough[None], cpu).numpy(), "z": z.numpy()}
        yield feed | {f"noise{i}": n.numpy() for i, n in enumerate(noise)}


def quantize(graph: bytes, calibration: list[Feed]) -> bytes:
    """The fp32 graph with int8 weights (per channel) and uint8 activations whose ranges are
    the calibration inputs' (ONNX Runtime's static quantiser, QDQ format)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self) -> Feed | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        fp32.write_bytes(graph)
        quantize_static(
            fp32,
            int8,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        return int8.read_bytes()


def openvino_face(graph: bytes, threads: int) -> Callable[[Feed], np.ndarray]:
    """The graph compiled by OpenVINO for one face (fp32 where it is not int8)."""
    import openvino as ov

    core = ov.Core()
    network = core.read_model(graph)
    network.reshape({i.get_any_name(): [1, *i.get_partial_shape()[1:]] for i in network.inputs})
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(network, "CPU", config)
    # an input tensor may carry several names (the graph's and OpenVINO's): take the one fed
    return lambda feed: compiled(
        [feed[(i.get_names() & feed.keys()).pop()] for i in compiled.inputs]
    )[0]


def onnx_face(graph: bytes, threads: int) -> Callable[[Feed], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda feed: session.run(None, {name: feed[name] for name in names})[0]


def fastest_ms(faces: dict[str, Callable[[Feed], np.ndarray]], feed: Feed, rounds: int):
    """Each face function's fastest of `rounds` alternating calls, in ms, after a warm-up."""
    for face in faces.values():
        face(feed)
    times = {name: [] for name in faces}
    for _ in range(rounds):
        for name, face in faces.items():
            start = time.perf_counter()
            face(feed)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(t) for name, t in times.items()}


def latency(preset: str, threads: int, rounds: int, calibration_faces: int) -> None:
    model = student(preset)
    size = model.image_size
    roughs = np.random.default_rng(0).integers(0, 256, (calibration_faces + 1, size, size, 3))
    inputs = list(feeds(model, roughs.astype(np.uint8), seed=0))
    fp32 = onnx_bytes(model)
    int8 = quantize(fp32, inputs[1:])
    print(f"student of {preset} at {size} px (random weights), {threads} threads")
    for name, runtime in (("openvino", openvino_face), ("onnx", onnx_face)):
        faces = {"fp32": runtime(fp32, threads), "int8": runtime(int8, threads)}
        ms = fastest_ms(faces, inputs[0], rounds)
        print(
            f"{name:9s} fp32 {ms['fp32']:6.1f} ms   int8 {ms['int8']:6.1f} ms   "
            f"({ms['int8'] / ms['fp32']:.2f}x)"
        )


def quality(model_file: Path, calibration_faces: int, threads: int) -> None:
    """fp32 against int8 of a trained student on the pipeline's test roughs (see the docstring)."""
    from spade.checkpoint import load_generator
    from spade.evaluate import load_held_out
    from spade.images import load_image_array
    from spade.metrics.inception import extract_features
    from spade.metrics.kid import kernel_inception_distance

    cpu = torch.device("cpu")
    model, _ = load_generator(model_file, cpu)
    train = load_image_array(paths.split_array(paths.ROUGHS, "train"))[:calibration_faces]
    fp32 = onnx_bytes(model)
    int8 = quantize(fp32, list(feeds(model, train, seed=1)))
    test = load_held_out(cpu)
    faces = {}
    for name, graph in (("fp32", fp32), ("int8", int8)):
        face = openvino_face(graph, threads)
        out = [face(feed) for feed in feeds(model, test.roughs, seed=0)]
        faces[name] = to_images(torch.from_numpy(np.concatenate(out)))
    gap = np.abs(faces["fp32"].astype(int) - faces["int8"].astype(int))
    print(
        f"{model_file} at {model.image_size} px, {len(test.roughs)} test roughs, calibrated on "
        f"{len(train)} training roughs: int8 faces {gap.mean():.2f} levels from fp32 on average, "
        f"99th percentile {np.percentile(gap, 99):.0f}, at most {gap.max()}"
    )
    kids = {}
    for name, images in faces.items():
        features = extract_features(images, device=cpu, batch_size=32)
        kids[name], std = kernel_inception_distance(
            features, test.reference["features"], n_subsets=100, subset_size=1000, seed=0
        )
        print(f"  {name}: KID {kids[name]:.5f} ± {std:.5f}")
    print(f"  int8 / fp32 KID: {kids['int8'] / kids['fp32']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="presets/full.yaml")
    p.add_argument("--model-file", type=Path, default=paths.STUDENT)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration-faces", type=int, default=64)
    p.add_argument("--skip-quality", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    latency(args.preset, args.threads, args.rounds, min(args.calibration_faces, 8))
    if args.skip_quality:
        return
    if not Path(args.model_file).is_file():
        print(f"quality skipped: no {args.model_file} (run `make repro` first)")
        return
    quality(Path(args.model_file), args.calibration_faces, args.threads)


if __name__ == "__main__":
    main()
