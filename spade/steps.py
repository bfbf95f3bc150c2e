"""One optimisation step of the GAN (`train_step`), and the phases every step shares with the
student's (`spade.distill.distill_step`): a discriminator update, then a generator update, on one
batch.

The generator runs once per step (as in pix2pix): its output, detached, trains D; then the same
output, through the updated D, trains G. The real images' D features from the D pass serve as
feature-matching targets, so D also sees the reals only once. All randomness comes from `rng`.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from spade.config import LoopConfig, TrainConfig
from spade.losses import (
    DOutputs,
    d_hinge_loss,
    feature_matching_loss,
    g_hinge_loss,
    kl_loss,
    masked_l1,
    mode_seeking_loss,
    texture_weight,
)
from spade.networks import GLOBAL_RNG, RandomStream
from spade.regions import random_region_masks
from spade.train_state import TrainState

Losses = dict[str, torch.Tensor]


def autocast(cfg: LoopConfig, device: torch.device):
    """bf16 autocast on CUDA with `amp`; nothing otherwise."""
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def discriminator_phase(
    state: TrainState, fake: torch.Tensor, rough: torch.Tensor, real: torch.Tensor, cfg: LoopConfig
) -> tuple[torch.Tensor, DOutputs]:
    """Hinge loss on one batch of (detached) fakes and reals, and D's update. Returns the loss
    and D's outputs on the reals (the feature-matching targets)."""
    with autocast(cfg, rough.device):
        fake_pair, real_pair = torch.cat([fake.detach(), rough], 1), torch.cat([real, rough], 1)
        out = state.d(torch.cat([fake_pair, real_pair], dim=0))
        fake_out = [[t[: len(rough)] for t in scale] for scale in out]
        real_out = [[t[len(rough) :] for t in scale] for scale in out]
        loss_d = d_hinge_loss(real_out, fake_out)
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.float().backward()
    state.opt_d.step()
    return loss_d, real_out


def adversarial_losses(
    state: TrainState,
    fake: torch.Tensor,
    rough: torch.Tensor,
    real: torch.Tensor,
    real_out: DOutputs,
    cfg: LoopConfig,
    mix: torch.Tensor | None = None,
) -> Losses:
    """The generator's losses every run has: hinge GAN, feature matching, L1 and VGG to the
    real face. D is frozen and used unwrapped, so DDP only syncs the generator's gradients.

    With regional mixing, the pixels `mix` gave another style (`mix` is 1) look like no real
    face: the GAN loss alone judges them, feature matching and L1 weigh the rest, and VGG sees
    only the faces that were not mixed."""
    d = state.bare_d
    d.requires_grad_(False)
    fake_out = d(torch.cat([fake, rough], 1))
    d.requires_grad_(True)
    keep = None if mix is None else 1 - mix
    losses = {"gan": cfg.lambda_gan * g_hinge_loss(fake_out)}
    if cfg.lambda_fm > 0:
        losses["fm"] = cfg.lambda_fm * feature_matching_loss(real_out, fake_out, keep)
    if cfg.lambda_l1 > 0:
        weight = keep
        if cfg.l1_texture > 0:
            texture = texture_weight(real, cfg.l1_texture)
            weight = texture if keep is None else texture * keep
        l1 = F.l1_loss(fake.float(), real) if weight is None else masked_l1(fake, real, weight)
        losses["l1"] = cfg.lambda_l1 * l1
    if state.vgg is not None:
        whole = slice(None) if mix is None else mix.flatten(1).amax(1) == 0
        losses["vgg"] = cfg.lambda_vgg * state.vgg(fake[whole].float(), real[whole])
    return losses


def region_mix(rough: torch.Tensor, cfg: LoopConfig, rng: RandomStream) -> torch.Tensor | None:
    """The batch's regional-mixing masks (`spade.regions.random_region_masks`), or None when
    `region_mix` is off."""
    return random_region_masks(rough, cfg.region_mix, rng) if cfg.region_mix > 0 else None


def generator_phase(state: TrainState, loss_d: torch.Tensor, losses: Losses) -> Losses:
    """The generator's update on the sum of `losses`; all losses, detached, for the logs."""
    loss_g = torch.stack([v.float() for v in losses.values()]).sum()
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()} | {
        f"loss_{k}": v.detach() for k, v in losses.items()
    }


# --------------------------------------------------------------------------- the GAN


def train_step(
    state: TrainState,
    rough: torch.Tensor,
    real: torch.Tensor,
    cfg: TrainConfig,
    rng: RandomStream = GLOBAL_RNG,
) -> Losses:
    """One GAN step: z from the style encoder (with `use_vae`) or drawn; in the regions
    `region_mix` picks, a second code: with the encoder, the code of those regions of the real
    face (and the first code that of the rest: `FaceModel.forward`), so every loss still
    compares with the real face, else a random one; with mode seeking, a second face from
    another z for half the batch."""
    mix = None
    with autocast(cfg, rough.device):
        if cfg.lambda_ms > 0:
            fake, fake_b, z, z_b = _two_styles(state, rough, cfg, rng)
            mu = logvar = None
        else:
            mix = region_mix(rough, cfg, rng)
            fake, mu, logvar = state.g(rough, style=real, rng=rng, mix=mix)
            if state.bare_g.encoder is not None:
                mix = None  # the regions' codes are the real face's own: it supervises them all
    loss_d, real_out = discriminator_phase(state, fake, rough, real, cfg)
    with autocast(cfg, rough.device):
        losses = adversarial_losses(state, fake, rough, real, real_out, cfg, mix)
        if mu is not None:
            losses["kl"] = cfg.lambda_kl * kl_loss(mu.float(), logvar.float())
        if cfg.lambda_ms > 0:
            n = len(fake_b)
            losses["ms"] = cfg.lambda_ms * mode_seeking_loss(fake[:n], fake_b, z[:n], z_b)
    return generator_phase(state, loss_d, losses)


def _two_styles(state: TrainState, rough: torch.Tensor, cfg: TrainConfig, rng: RandomStream):
    """Faces for the batch and, for its first half, a second face from another z: one
    generator pass over both, for the mode-seeking term. Returns (fake, fake_b, z, z_b)."""
    n = max(1, len(rough) // 2)
    z = rng.randn(len(rough), cfg.arch.z_dim, device=rough.device)
    z_b = rng.randn(n, cfg.arch.z_dim, device=rough.device)
    out, _, _ = state.g(torch.cat([rough, rough[:n]]), z=torch.cat([z, z_b]), rng=rng)
    return out[: len(rough)], out[len(rough) :], z, z_b
