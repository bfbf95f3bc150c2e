"""GAN losses: hinge, feature matching, VGG19 perceptual and the VAE's KL term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spade.errors import UserError

DOutputs = list[list[torch.Tensor]]  # per scale, per layer; the last layer is the logits


def d_hinge_loss(real: DOutputs, fake: DOutputs) -> torch.Tensor:
    """mean(relu(1 − D(real))) + mean(relu(1 + D(fake))), averaged over scales."""
    losses = [
        F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(losses).mean()


def g_hinge_loss(fake: DOutputs) -> torch.Tensor:
    """−mean(D(fake)), averaged over scales."""
    return torch.stack([-f[-1].mean() for f in fake]).mean()


def feature_matching_loss(real: DOutputs, fake: DOutputs) -> torch.Tensor:
    """L1 between D's intermediate features of fake and (detached) real, averaged over scales."""
    total = fake[0][0].new_zeros(())
    for r_scale, f_scale in zip(real, fake, strict=True):
        for r, f in zip(r_scale[:-1], f_scale[:-1], strict=True):
            total = total + F.l1_loss(f, r.detach())
    return total / len(fake)


def mode_seeking_loss(
    fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor
) -> torch.Tensor:
    """1 / (mean|G(r, z_a) − G(r, z_b)| / mean|z_a − z_b|): small when z changes the face.

    Mode seeking (Mao et al., CVPR 2019) against the mode collapse that the paired L1 loss
    rewards: without it the generator learns to ignore z.
    """
    ratio = (fake_a.float() - fake_b.float()).abs().mean() / (z_a - z_b).abs().mean()
    return 1.0 / (ratio + 1e-5)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)), summed over z and averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class VGGLoss(nn.Module):
    """L1 between VGG19 features at relu1_1…relu5_1, weighted 1/32, 1/16, 1/8, 1/4, 1.

    Inputs are images in [-1, 1]. Weights are torchvision's ImageNet VGG19, loaded the usual way
    (downloaded once into TORCH_HOME); without them this raises a `UserError`.
    """

    SLICES = (2, 7, 12, 21, 30)  # indices into vgg19.features ending at relu1_1 … relu5_1
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self):
        super().__init__()
        from torchvision.models import VGG19_Weights, vgg19

        try:
            features = vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features
        except Exception as e:  # no network and no cached file
            raise UserError(
                f"VGG19 ImageNet weights could not be loaded ({type(e).__name__}: {e}). "
                "Connect to the internet once (they are cached in TORCH_HOME), "
                "or turn the perceptual loss off with train.lambda_vgg: 0"
            ) from e
        starts = (0, *self.SLICES[:-1])
        self.slices = nn.ModuleList(features[a:b] for a, b in zip(starts, self.SLICES, strict=True))
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGLoss:
        return super().train(False)  # always a fixed feature extractor

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        x = ((fake + 1) / 2 - self.mean) / self.std
        y = ((real + 1) / 2 - self.mean) / self.std
        loss = fake.new_zeros(())
        for weight, block in zip(self.WEIGHTS, self.slices, strict=True):
            x, y = block(x), block(y)
            loss = loss + weight * F.l1_loss(x, y.detach())
        return loss
