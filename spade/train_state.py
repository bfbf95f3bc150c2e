"""What training updates and a checkpoint holds: the networks, the EMA copy and the optimisers
(and, for distillation, the trained 1×1 adapters beside the frozen teacher)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from spade.config import LoopConfig, TrainConfig
from spade.dist import DistEnv, to_sync_batchnorm
from spade.losses import VGGLoss
from spade.networks import FaceModel, MultiscaleDiscriminator


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside `torch.compile` and DDP wrappers (or the module itself)."""
    module = getattr(module, "_orig_mod", module)
    return module.module if isinstance(module, DDP) else module


@dataclass
class TrainState:
    g: nn.Module  # FaceModel; DDP-wrapped under torchrun
    d: nn.Module  # MultiscaleDiscriminator; likewise
    g_ema: FaceModel  # exponential moving average of g's weights: what gets exported
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    vgg: VGGLoss | None = None
    adapters: nn.Module | None = None  # distillation's 1×1 adapters, trained with the generator
    teacher: FaceModel | None = None  # frozen; never saved in a checkpoint

    @property
    def bare_g(self) -> FaceModel:
        return unwrap(self.g)

    @property
    def bare_d(self) -> MultiscaleDiscriminator:
        return unwrap(self.d)

    @property
    def bare_adapters(self) -> nn.Module | None:
        return None if self.adapters is None else unwrap(self.adapters)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "G": self.bare_g.state_dict(),
            "D": self.bare_d.state_dict(),
            "G_ema": self.g_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }
        if self.adapters is not None:
            state["adapters"] = self.bare_adapters.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bare_g.load_state_dict(state["G"])
        self.bare_d.load_state_dict(state["D"])
        self.g_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.adapters is not None:  # "extra": checkpoints written before the rename
            self.bare_adapters.load_state_dict(state.get("adapters", state.get("extra")))

    def weights_finite(self) -> torch.Tensor:
        """A 0-d bool tensor (no host sync): are all trained weights finite?"""
        params = [*self.bare_g.parameters(), *self.bare_d.parameters()]
        norms = torch._foreach_norm([p.detach().float() for p in params])
        return torch.isfinite(torch.stack(norms).sum())


def build_state(
    g: FaceModel,
    d: MultiscaleDiscriminator,
    cfg: LoopConfig,
    env: DistEnv,
    *,
    adapters: nn.Module | None = None,
    teacher: FaceModel | None = None,
    fused: bool | None = None,
) -> TrainState:
    """Networks on `env.device` (DDP-wrapped when distributed, compiled with `compile`), the
    EMA copy and Adam optimisers (fused kernels on CUDA unless `fused` says otherwise) over the
    parameters that train: frozen ones (`requires_grad` off) are left out."""
    g = to_sync_batchnorm(g, env)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    modules = [m for m in (g, d, adapters, teacher) if m is not None]
    for module in modules:
        module.to(env.device, memory_format=memory_format)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    fused = env.device.type == "cuda" if fused is None else fused
    trained = [p for m in (g, adapters) if m is not None for p in m.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(trained, lr=cfg.lr_g, betas=cfg.betas, fused=fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=cfg.betas, fused=fused)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        g, d = DDP(g, device_ids=ids), DDP(d, device_ids=ids)
        adapters = DDP(adapters, device_ids=ids) if adapters is not None else None
    if cfg.compile:
        g, d = torch.compile(g), torch.compile(d)
    vgg = VGGLoss([f"{cfg.SECTION}.lambda_vgg"]).to(env.device) if cfg.lambda_vgg > 0 else None
    return TrainState(g, d, g_ema, opt_g, opt_d, vgg=vgg, adapters=adapters, teacher=teacher)


def build_train_state(
    cfg: TrainConfig, image_size: int, env: DistEnv, *, fused: bool | None = None
) -> TrainState:
    """The GAN's networks, new, and their optimisers."""
    g, d = FaceModel(cfg.arch, image_size), MultiscaleDiscriminator(cfg.disc)
    return build_state(g, d, cfg, env, fused=fused)
