import pytest
import torch

from spade.errors import UserError
from spade.losses import VGGLoss, d_hinge_loss, feature_matching_loss, g_hinge_loss, kl_loss


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
        raise OSError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(UserError, match="lambda_vgg: 0"):
        VGGLoss()


def test_mode_seeking_rewards_faces_that_differ():
    from spade.losses import mode_seeking_loss

    z_a, z_b = torch.zeros(2, 8), torch.ones(2, 8)
    same = mode_seeking_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), z_a, z_b)
    apart = mode_seeking_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), z_a, z_b)
    assert same > 1000 and apart == pytest.approx(1.0, rel=1e-3)  # 1 / (1 / 1)
