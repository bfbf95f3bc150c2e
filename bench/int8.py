"""Benchmark post-training int8 for the student: latency and KID against fp32, in one run.

int8 is ONNX Runtime's static quantiser on the exported graph (QDQ: int8 weights per output
channel, uint8 activations with ranges calibrated on roughs), run by the studio's OpenVINO
runner (which executes QDQ graphs in int8) and ONNX Runtime runner.

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
import functools
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench.regions import alternating_rounds, student
from spade import paths
from spade.data import to_images, to_model
from spade.inference import seeded
from spade.networks import FaceModel
from spade.runtime import OnnxRunner, OpenVinoRunner, Runner, onnx_bytes
from spade.runtime import _inputs as graph_inputs  # the graphs' input names, as runners feed them

Face = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]  # a runner's rough, z and noise


def faces_of(model: FaceModel, roughs: np.ndarray, seed: int) -> Iterator[Face]:
    """A runner's inputs for each uint8 rough: the rough, z and the per-layer noise, drawn from
    `seed` one face at a time."""
    rng, cpu = seeded(seed), torch.device("cpu")
    for rough in roughs:
        z = rng.randn(1, model.arch.z_dim, device=cpu)
        yield to_model(rough[None], cpu), z, model.generator.draw_noise(rng, 1, cpu)


def quantize(graph: bytes, calibration: list[Face]) -> bytes:
    """The fp32 graph with int8 weights (per channel) and uint8 activations whose ranges are
    the calibration faces' (ONNX Runtime's static quantiser, QDQ format)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = (graph_inputs(*face, None)[1] for face in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
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


def runner(runtime: str, graph: bytes) -> Runner:
    """The studio's runner of `runtime` ("openvino" or "onnx") on `graph`, in fp32 where the
    graph is not int8."""
    if runtime == "openvino":
        return OpenVinoRunner(lambda codes: graph, torch.float32)
    return OnnxRunner(lambda codes: graph)


def latency(preset: str, rounds: int, calibration_faces: int) -> None:
    model = student(preset)
    size = model.image_size
    roughs = np.random.default_rng(0).integers(0, 256, (calibration_faces + 1, size, size, 3))
    face, *calibration = faces_of(model, roughs.astype(np.uint8), seed=0)
    fp32 = onnx_bytes(model)
    int8 = quantize(fp32, calibration)
    print(f"student of {preset} at {size} px (random weights), {torch.get_num_threads()} threads")
    for name in ("openvino", "onnx"):
        calls = [functools.partial(runner(name, graph), *face) for graph in (fp32, int8)]
        ms32, ms8 = 1000 * alternating_rounds(calls, rounds).min(axis=0)
        print(f"{name:9s} fp32 {ms32:6.1f} ms   int8 {ms8:6.1f} ms   ({ms8 / ms32:.2f}x)")


def quality(model_file: Path, calibration_faces: int) -> None:
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
    int8 = quantize(fp32, list(faces_of(model, train, seed=1)))
    test = load_held_out(cpu)
    faces = {}
    for name, graph in (("fp32", fp32), ("int8", int8)):
        run = runner("openvino", graph)
        out = [run(*face) for face in faces_of(model, test.roughs, seed=0)]
        faces[name] = to_images(torch.cat(out))
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
    latency(args.preset, args.rounds, min(args.calibration_faces, 8))
    if args.skip_quality:
        return
    if not Path(args.model_file).is_file():
        print(f"quality skipped: no {args.model_file} (run `make repro` first)")
        return
    quality(Path(args.model_file), args.calibration_faces)


if __name__ == "__main__":
    main()
