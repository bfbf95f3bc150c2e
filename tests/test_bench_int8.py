"""bench/int8.py's int8 graph: quantised for real, and close to the fp32 faces it stands for."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bench import int8 as bench
from spade.config import GeneratorArch
from spade.networks import FaceModel
from spade.runtime import onnx_bytes

SIZE = 32


@pytest.mark.parametrize("runtime", ["openvino_face", "onnx_face"])
def test_the_int8_graph_is_quantised_and_paints_close_to_fp32(runtime):
    pytest.importorskip({"openvino_face": "openvino", "onnx_face": "onnxruntime"}[runtime])
    torch.manual_seed(0)
    model = FaceModel(GeneratorArch(ngf=8, spade_hidden=8, z_dim=8), SIZE).eval()
    roughs = np.random.default_rng(0).integers(0, 256, (9, SIZE, SIZE, 3), dtype=np.uint8)
    inputs = list(bench.feeds(model, roughs, seed=0))
    fp32 = onnx_bytes(model)
    int8 = bench.quantize(fp32, inputs[1:])
    ops = {node.op_type for node in onnx.load_from_string(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    tensors = {k: torch.from_numpy(v) for k, v in inputs[0].items()}
    noise = [tensors[f"noise{i}"] for i in range(len(model.generator.noise_shapes(1)))]
    with torch.no_grad():
        want = model(tensors["rough"], z=tensors["z"], noise=noise)[0].numpy()
    face = getattr(bench, runtime)
    got32, got8 = (face(graph, 2)(inputs[0]) for graph in (fp32, int8))
    assert np.abs(got32 - want).max() < 1e-3  # the same inputs, by name
    gap = np.abs(got8 - got32)
    assert 0 < gap.mean() < 0.05  # int8 for real, a few levels in 255 on average
