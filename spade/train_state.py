"""What training updates and a checkpoint holds: the networks, the EMA copy and the optimisers."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from spade.config import TrainConfig
from spade.dist import DistEnv, to_sync_batchnorm
from spade.losses import VGGLoss
from spade.networks import MultiscaleDiscriminator, StyledGenerator


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside `torch.compile` and DDP wrappers (or the module itself)."""
    module = getattr(module, "_orig_mod", module)
    return module.module if isinstance(module, DDP) else module


@dataclass
class TrainState:
    g: nn.Module  # StyledGenerator; DDP-wrapped under torchrun
    d: nn.Module  # MultiscaleDiscriminator; likewise
    g_ema: StyledGenerator  # exponential moving average of g's weights: what gets exported
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    vgg: VGGLoss | None = None

    @property
    def bare_g(self) -> StyledGenerator:
        return unwrap(self.g)

    @property
    def bare_d(self) -> MultiscaleDiscriminator:
        return unwrap(self.d)

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.bare_g.state_dict(),
            "D": self.bare_d.state_dict(),
            "G_ema": self.g_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bare_g.load_state_dict(state["G"])
        self.bare_d.load_state_dict(state["D"])
        self.g_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def weights_finite(self) -> torch.Tensor:
        """A 0-d bool tensor (no host sync): are all trained weights finite?"""
        params = [*self.bare_g.parameters(), *self.bare_d.parameters()]
        norms = torch._foreach_norm([p.detach().float() for p in params])
        return torch.isfinite(torch.stack(norms).sum())


def build_train_state(
    cfg: TrainConfig, image_size: int, env: DistEnv, *, fused: bool | None = None
) -> TrainState:
    """Networks on `env.device` (DDP-wrapped when distributed, compiled with `train.compile`),
    the EMA copy and Adam optimisers (fused kernels on CUDA unless `fused` says otherwise)."""
    g = to_sync_batchnorm(StyledGenerator(cfg.arch, image_size), env)
    d = MultiscaleDiscriminator(cfg.disc)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    g.to(env.device, memory_format=memory_format)
    d.to(env.device, memory_format=memory_format)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    fused = env.device.type == "cuda" if fused is None else fused
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=cfg.betas, fused=fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=cfg.betas, fused=fused)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        g, d = DDP(g, device_ids=ids), DDP(d, device_ids=ids)
    if cfg.compile:
        g, d = torch.compile(g), torch.compile(d)
    vgg = VGGLoss().to(env.device) if cfg.lambda_vgg > 0 else None
    return TrainState(g=g, d=d, g_ema=g_ema, opt_g=opt_g, opt_d=opt_d, vgg=vgg)
