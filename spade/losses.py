"""GAN losses: hinge, feature matching, VGG19 perceptual and the VAE's KL term."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from spade.errors import UserError

if TYPE_CHECKING:
    from spade.config import Params

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


def feature_matching_loss(
    real: DOutputs, fake: DOutputs, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 between D's intermediate features of fake and (detached) real, averaged over scales;
    with a (B, 1, S, S) `weight`, a weighted mean (`masked_l1`) with the weight area-averaged
    to each feature map."""
    total = fake[0][0].new_zeros(())
    for r_scale, f_scale in zip(real, fake, strict=True):
        for r, f in zip(r_scale[:-1], f_scale[:-1], strict=True):
            if weight is None:
                total = total + F.l1_loss(f, r.detach())
            else:
                total = total + masked_l1(
                    f, r.detach(), F.adaptive_avg_pool2d(weight, f.shape[-2:])
                )
    return total / len(fake)


def texture_weight(real: torch.Tensor, strength: float) -> torch.Tensor:
    """(B, 1, S, S) per-pixel L1 weights 1 + strength · |real − median₃(real)| (the largest
    over channels; images in [−1, 1]): a one-pixel highlight or strand line weighs up to
    1 + 2·strength, a flat area 1. The style textures are a few pixels of a face, so a plain
    L1 barely notices whether they are drawn."""
    patches = F.pad(real.float(), (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1)
    median = patches.flatten(-2).median(dim=-1).values  # (B, C, S, S)
    return 1 + strength * (real.float() - median).abs().amax(dim=1, keepdim=True)


def masked_l1(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ w·|x − y| / Σ w over (B, C, H, W) with a (B, 1, H, W) weight: the mean L1 over the
    weighted pixels (F.l1_loss's value when the weight is all ones)."""
    total = (weight * (x.float() - y.float()).abs()).sum()
    return total / (weight.sum() * x.shape[1]).clamp_min(1e-8)


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
    """KL(N(μ, σ²) ‖ N(0, 1)), summed over z (the last dim) and averaged over the batch (and
    the region codes of (B, K, z_dim) ones)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)).mean()


def vgg19_weights(needed_by: Sequence[str]) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG19 weights, downloaded once into TORCH_HOME. Without them (no
    network, no cached copy) a one-line `UserError` names every key in `needed_by`: the
    parameters whose perceptual loss is on."""
    from torchvision.models import VGG19_Weights

    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except Exception as e:
        why = (str(e).splitlines() or [""])[0]
        off = ", ".join(f"{key}: 0" for key in needed_by)
        raise UserError(
            f"VGG19 ImageNet weights could not be loaded ({type(e).__name__}: {why}); "
            f"{' and '.join(needed_by)} need them. Connect to the internet once (they are cached "
            f"in TORCH_HOME), or turn the perceptual loss off: {off}"
        ) from e


def fetch_vgg19(params: Params, section: str) -> None:
    """Before `section` ("train" or "distill") does any work: the VGG19 weights if its
    perceptual loss is on, so that offline the first stage that needs them names every key that
    does (the other stage's too), not only its own, and not hours later."""
    if getattr(params, section).lambda_vgg > 0:
        keys = [f"{s}.lambda_vgg" for s in ("train", "distill") if getattr(params, s).lambda_vgg]
        vgg19_weights(keys)


class VGGLoss(nn.Module):
    """L1 between VGG19 features at relu1_1…relu5_1, weighted 1/32, 1/16, 1/8, 1/4, 1.

    Inputs are images in [-1, 1]. Weights: `vgg19_weights`, whose error names `needed_by`: the
    keys that turn this loss on (`<LoopConfig.SECTION>.lambda_vgg`), which differ per stage.
    """

    SLICES = (2, 7, 12, 21, 30)  # indices into vgg19.features ending at relu1_1 … relu5_1
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self, needed_by: Sequence[str]):
        super().__init__()
        from torchvision.models import vgg19

        weights = vgg19_weights(needed_by)  # first: offline, it fails before building anything
        model = vgg19()
        model.load_state_dict(weights)
        features = model.features
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
