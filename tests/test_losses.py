import os
import subprocess
import sys

import pytest
import torch
import yaml

from spade.errors import UserError
from spade.losses import (
    VGGLoss,
    d_hinge_loss,
    feature_matching_loss,
    g_hinge_loss,
    kl_loss,
    masked_l1,
    texture_weight,
)

from conftest import ROOT


def outputs(*logits: float) -> list[list[torch.Tensor]]:
    """One scale per value: a feature map of ones and constant logits."""
    return [[torch.ones(1, 2, 3, 3), torch.full((1, 1, 2, 2), v)] for v in logits]


def test_hinge_losses_closed_form():
    # D: relu(1 - real) + relu(1 + fake); scale 1: 0 + 2, scale 2: 1.5 + 0 → mean 1.75
    assert d_hinge_loss(outputs(2.0, -0.5), outputs(1.0, -3.0)).item() == pytest.approx(1.75)
    # G: -mean(D(fake)), averaged over scales
    assert g_hinge_loss(outputs(1.0, -3.0)).item() == pytest.approx(1.0)


def test_feature_matching():
    real = outputs(0.0, 0.0)
    assert feature_matching_loss(real, outputs(5.0, 5.0)).item() == 0  # logits excluded
    fake = [[f + 0.5 if i == 0 else f for i, f in enumerate(s)] for s in real]
    assert feature_matching_loss(real, fake).item() == pytest.approx(0.5)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    zeros = torch.zeros(4, 8)
    assert kl_loss(zeros, zeros).item() == 0
    assert kl_loss(torch.ones(4, 8), zeros).item() == pytest.approx(0.5 * 8)


def test_vgg_without_weights_is_a_clear_user_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network\nsecond line")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"train\.lambda_vgg: 0") as e:
        VGGLoss(["train.lambda_vgg"])
    assert "\n" not in str(e.value)
    with pytest.raises(UserError) as e:  # the student's loss names the student's key
        VGGLoss(["distill.lambda_vgg"])
    assert "distill.lambda_vgg: 0" in str(e.value) and "train." not in str(e.value)


@pytest.mark.parametrize(
    ("stage", "train_vgg", "named"),
    [
        ("train", 10.0, "train.lambda_vgg and distill.lambda_vgg need them"),
        ("distill", 0.0, "; distill.lambda_vgg need them"),
    ],
)
def test_offline_the_first_stage_that_needs_vgg_names_every_key(tmp_path, stage, train_vgg, named):
    """No network (a proxy that refuses) and no cached weights: the stage stops before any
    work, in one line naming every key whose perceptual loss is on."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["lambda_vgg"], params["distill"]["lambda_vgg"] = train_vgg, 10.0
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing is ever downloaded
    env = os.environ | {"TORCH_HOME": str(tmp_path / "torch")}
    env |= {k: nowhere for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    for key in ("no_proxy", "NO_PROXY"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"stages/{stage}.py")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and named in errors[0], proc.stderr
    assert "lambda_vgg: 0" in errors[0]
    assert sorted(p.name for p in repo.iterdir()) == ["params.yaml"]  # nothing was done


def test_mode_seeking_rewards_faces_that_differ():
    from spade.losses import mode_seeking_loss

    z_a, z_b = torch.zeros(2, 8), torch.ones(2, 8)
    same = mode_seeking_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), z_a, z_b)
    apart = mode_seeking_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), z_a, z_b)
    assert same > 1000 and apart == pytest.approx(1.0, rel=1e-3)  # 1 / (1 / 1)


def test_masked_l1_is_l1_under_a_weight_of_ones_and_ignores_weightless_pixels():
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    ones = torch.ones(2, 1, 8, 8)
    assert masked_l1(x, y, ones).item() == pytest.approx(torch.nn.functional.l1_loss(x, y).item())
    left = torch.zeros(2, 1, 8, 8)
    left[..., :4] = 1
    y_right_changed = y.clone()
    y_right_changed[..., 4:] += 5  # outside the weight: no effect
    assert masked_l1(x, y_right_changed, left).item() == pytest.approx(masked_l1(x, y, left).item())
    real = outputs(0.0)
    fake = [[f + (i == 0) for i, f in enumerate(s)] for s in real]
    assert feature_matching_loss(real, fake, torch.ones(1, 1, 6, 6)).item() == pytest.approx(1.0)


def test_texture_weight_marks_one_pixel_details_not_flat_areas_or_edges():
    img = torch.zeros(1, 3, 9, 9)
    img[..., 4, 4] = 1.0  # a highlight
    img[..., :, 7:] = -1.0  # a flat region with a straight edge
    w = texture_weight(img, 10.0)
    assert w[0, 0, 4, 4] == pytest.approx(11.0)
    assert w[0, 0, 1, 1] == 1.0 and w[0, 0, 4, 8] == 1.0 and w[0, 0, 4, 6] == 1.0
