import numpy as np
import pytest
import torch

from spade.config import EvaluateConfig, GeneratorArch
from spade.errors import UserError
from spade.evaluate import HeldOut, style_metrics
from spade.inference import generate_faces
from spade.metrics.diversity import mean_pairwise_l1
from spade.networks import FaceModel
from spade.synthetic import render_face


def test_mean_pairwise_l1_closed_form():
    zeros, full, half = (np.full((2, 4, 4, 3), v, np.uint8) for v in (0, 255, 51))
    assert mean_pairwise_l1([zeros, zeros]) == 0
    assert mean_pairwise_l1([zeros, full]) == 1
    # pairs: (0,255)=1, (0,51)=0.2, (255,51)=0.8 → mean 2/3
    assert mean_pairwise_l1([zeros, full, half]) == pytest.approx(2 / 3)
    with pytest.raises(UserError):
        mean_pairwise_l1([zeros])


def test_diversity_of_a_model_that_uses_z_and_of_one_that_ignores_it():
    torch.manual_seed(0)
    arch = GeneratorArch(
        ngf=4, spade_hidden=8, z_dim=8, nef=4, use_vae=True, z_every_layer=False, noise=False
    )
    model = FaceModel(arch, 32).eval()
    roughs = np.stack([render_face(0, i, 32) for i in range(4)])
    test = HeldOut(roughs=roughs, real=roughs, reference={}, styles={})
    cfg = EvaluateConfig(diversity_k=3, batch_size=2)
    first = generate_faces(model, roughs, seed=0)
    metrics = style_metrics(model, first, test, cfg)
    assert metrics["diversity"] > 0 and metrics["diversity_style"] > 0
    assert "style_control" not in metrics  # no labels, no probe
    # same seed, same faces; z ignored (its weights zeroed), no diversity
    np.testing.assert_array_equal(generate_faces(model, roughs, seed=0), first)
    model.generator.fc.weight.data.zero_()
    model.generator.fc.bias.data.zero_()
    still = generate_faces(model, roughs, seed=0)
    assert style_metrics(model, still, test, cfg)["diversity"] == pytest.approx(0, abs=2e-3)
