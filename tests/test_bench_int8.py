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


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_the_int8_graph_is_quantised_and_paints_close_to_fp32(runtime):
    pytest.importorskip({"openvino": "openvino", "onnx": "onnxruntime"}[runtime])
    torch.manual_seed(0)
    model = FaceModel(GeneratorArch(ngf=8, spade_hidden=8, z_dim=8), SIZE).eval()
    roughs = np.random.default_rng(0).integers(0, 256, (9, SIZE, SIZE, 3), dtype=np.uint8)
    face, *calibration = bench.faces_of(model, roughs, seed=0)
    fp32 = onnx_bytes(model)
    int8 = bench.quantize(fp32, calibration)
    ops = {node.op_type for node in onnx.load_from_string(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    rough, z, noise = face
    with torch.no_grad():
        want = model(rough, z=z, noise=noise)[0]
    got32, got8 = (bench.runner(runtime, graph)(*face) for graph in (fp32, int8))
    assert (got32 - want).abs().max() < 1e-3  # the same inputs, by name
    gap = (got8 - got32).abs()
    assert 0 < gap.mean() < 0.05  # int8 for real, a few levels in 255 on average
