"""bench/stroke_reach.py's measure: how far a change of the rough changes the face."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from spade.config import GeneratorArch
from spade.networks import FaceModel

from conftest import ROOT

SIZE = 32


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reach", ROOT / "bench/stroke_reach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_a_corner_pixel_changes_the_face_near_it_and_the_blocks(bench):
    torch.manual_seed(0)
    model = FaceModel(GeneratorArch(ngf=4, spade_hidden=8, z_dim=8), SIZE).eval()
    z = torch.randn(1, 8)
    noise = [torch.randn(s) for s in model.generator.noise_shapes(1)]
    rough = np.full((SIZE, SIZE, 3), 128, np.uint8)
    new = rough.copy()
    new[:4, :4] = (250, 20, 20)  # a top-left touch, seen by every resolution's rough
    before = bench.faces_and_blocks(model, rough, z, noise)
    after = bench.faces_and_blocks(model, new, z, noise)
    row = bench.reach((new != rough).any(-1), before, after, [1, 8, 31])
    assert row["changed"] == pytest.approx(16 / SIZE**2, abs=1e-4)
    assert row["beyond_1px"]["max_levels"] > 0  # a change reaches past its own pixels
    assert row["beyond_31px"]["share_of_face"] == pytest.approx(0, abs=1e-3)  # nothing that far
    assert len(row["blocks_changed_over_1pct"]) == len(model.generator.blocks)
    assert max(row["blocks_changed_over_1pct"]) > 0
    same = bench.reach(np.zeros((SIZE, SIZE), bool), before, before, [1])
    assert same["beyond_1px"]["max_levels"] == 0 and max(same["blocks_changed_over_1pct"]) == 0
