"""The training loop: TTUR hinge GAN with EMA, AMP, DDP, atomic resumable checkpoints.

Read top to bottom: `train()` builds everything, resumes if it can, then runs `train_step` until
the last epoch, checkpointing every `ckpt_every` steps, at each epoch end and on SIGINT/SIGTERM.
All randomness of a step comes from the global torch RNG (saved in checkpoints), so a resumed
run repeats an uninterrupted one exactly on the CPU. Side work (sample grids, BN
re-estimation) runs inside `fork_rng` so logging never changes the training stream.
"""

from __future__ import annotations

import copy
import json
import logging
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from spade.checkpoint import (
    checkpoint_identity,
    data_identity,
    generator_state,
    load_resumable_checkpoint,
    restore,
    save_checkpoint,
    to_plain_batchnorm,
)
from spade.config import TrainConfig
from spade.data import (
    PairDataset,
    ResumableSampler,
    isolated_rng,
    to_model_range,
    to_uint8_hwc,
)
from spade.dist import DistEnv, any_rank, barrier
from spade.errors import UserError
from spade.images import atomic_path, make_grid
from spade.losses import (
    VGGLoss,
    d_hinge_loss,
    feature_matching_loss,
    g_hinge_loss,
    kl_loss,
)
from spade.networks import GeneratorConfig, MultiscaleDiscriminator, StyledGenerator

log = logging.getLogger(__name__)


@dataclass
class TrainPaths:
    data: Path = Path("data")
    checkpoint: Path = Path("models/checkpoint.pt")
    generator: Path = Path("models/generator.pt")
    live_dir: Path = Path("dvclive")
    metrics: Path = Path("metrics/train.json")

    def split(self, split: str) -> tuple[Path, Path]:
        return self.data / "roughs" / f"{split}.npy", self.data / "sampled" / f"{split}.npy"


@dataclass
class Models:
    G: nn.Module  # StyledGenerator, maybe DDP-wrapped
    D: nn.Module  # MultiscaleDiscriminator, maybe DDP-wrapped
    G_ema: StyledGenerator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    vgg: VGGLoss | None = None

    @property
    def g(self) -> StyledGenerator:
        return self.G.module if isinstance(self.G, DDP) else self.G

    @property
    def d(self) -> MultiscaleDiscriminator:
        return self.D.module if isinstance(self.D, DDP) else self.D


@dataclass
class TrainResult:
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)


class StopRequested(Exception):
    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class NonFiniteLoss(UserError):
    pass


# --------------------------------------------------------------------------- set-up


def generator_config(cfg: TrainConfig, image_size: int) -> GeneratorConfig:
    return GeneratorConfig(
        image_size=image_size,
        ngf=cfg.ngf,
        spade_hidden=cfg.spade_hidden,
        z_dim=cfg.z_dim,
        noise=cfg.noise,
        use_vae=cfg.use_vae,
        nef=cfg.nef,
    )


def build_models(cfg: TrainConfig, gcfg: GeneratorConfig, env: DistEnv) -> Models:
    G = StyledGenerator(gcfg)
    D = MultiscaleDiscriminator(
        in_channels=6, ndf=cfg.ndf, n_layers=cfg.n_layers_d, num_d=cfg.num_d
    )
    if env.distributed and env.device.type == "cuda":
        G = nn.SyncBatchNorm.convert_sync_batchnorm(G)  # BN statistics over the global batch
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G.to(env.device, memory_format=memory_format)
    D.to(env.device, memory_format=memory_format)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    vgg = VGGLoss().to(env.device) if cfg.lambda_vgg > 0 else None
    return Models(G=G, D=D, G_ema=G_ema, opt_g=opt_g, opt_d=opt_d, vgg=vgg)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """1 until the last `decay_epochs` epochs, then linearly down (never reaching 0 in training)."""
    if cfg.decay_epochs == 0:
        return 1.0
    return min(1.0, (cfg.epochs - epoch) / cfg.decay_epochs)


def set_lr(models: Models, cfg: TrainConfig, epoch: int) -> None:
    f = lr_factor(cfg, epoch)
    for opt, lr in ((models.opt_g, cfg.lr_g), (models.opt_d, cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * f


# --------------------------------------------------------------------------- one step


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def prepare_batch(
    batch: tuple[torch.Tensor, torch.Tensor], cfg: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (rough, real) → float [-1, 1] on the device, flipped together at random."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    rough, real = (
        to_model_range(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        for x in batch
    )
    if cfg.flip:
        flip = (torch.rand(rough.shape[0], device=device) < 0.5).view(-1, 1, 1, 1)
        rough = torch.where(flip, rough.flip(-1), rough)
        real = torch.where(flip, real.flip(-1), real)
    return rough, real


def train_step(
    models: Models, rough: torch.Tensor, real: torch.Tensor, cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    """One discriminator update, then one generator update. Returns detached losses.

    The generator runs once per step (as in pix2pix): its output, detached, trains D; then the
    same output, through the updated D, trains G. The real images' D features from the D pass
    serve as feature-matching targets, so D also sees the reals only once.
    """
    device = rough.device
    with _autocast(cfg, device):
        fake, mu, logvar = models.G(rough, style=real)
        fake_pair, real_pair = torch.cat([fake, rough], 1), torch.cat([real, rough], 1)
        # Discriminator: hinge on one batch of (detached) fakes and reals.
        out = models.D(torch.cat([fake_pair.detach(), real_pair], dim=0))
        fake_out = [[t[: len(rough)] for t in scale] for scale in out]
        real_out = [[t[len(rough) :] for t in scale] for scale in out]
        loss_d = d_hinge_loss(real_out, fake_out)
    models.opt_d.zero_grad(set_to_none=True)
    loss_d.float().backward()
    models.opt_d.step()

    # Generator: D is frozen and used unwrapped, so DDP only syncs the generator's gradients.
    d = models.d
    d.requires_grad_(False)
    with _autocast(cfg, device):
        fake_out = d(fake_pair)
        losses = {"gan": cfg.lambda_gan * g_hinge_loss(fake_out)}
        if cfg.lambda_fm > 0:
            losses["fm"] = cfg.lambda_fm * feature_matching_loss(real_out, fake_out)
        if cfg.lambda_l1 > 0:
            losses["l1"] = cfg.lambda_l1 * F.l1_loss(fake.float(), real)
        if models.vgg is not None:
            losses["vgg"] = cfg.lambda_vgg * models.vgg(fake.float(), real)
        if mu is not None:
            losses["kl"] = cfg.lambda_kl * kl_loss(mu.float(), logvar.float())
        loss_g = torch.stack([v.float() for v in losses.values()]).sum()
    models.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    models.opt_g.step()
    d.requires_grad_(True)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()} | {
        f"loss_{k}": v.detach() for k, v in losses.items()
    }


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with a warm-up (decay ≤ (1+t)/(10+t)); buffers are copied."""
    decay = min(decay, (1 + step) / (10 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


# --------------------------------------------------------------------------- export and samples


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader: DataLoader, cfg: TrainConfig, n: int) -> None:
    """Re-estimate BatchNorm running statistics for `model`'s own (averaged) weights."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns or n == 0:
        return
    device = next(model.parameters()).device
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches seen
    model.train()
    with isolated_rng(device):
        for _, batch in zip(range(n), loader, strict=False):
            rough, real = prepare_batch(batch, cfg, device)
            model(rough, style=real)
    model.eval()


@torch.no_grad()
def sample_grid(model: StyledGenerator, rough: torch.Tensor, real: torch.Tensor, seed: int):
    """rough | generated | real, with fixed z and noise."""
    device = rough.device
    with isolated_rng(device):
        torch.manual_seed(seed)
        fake, _, _ = model(rough)
    return make_grid([to_uint8_hwc(rough), to_uint8_hwc(fake), to_uint8_hwc(real)])


@torch.no_grad()
def test_l1(model: StyledGenerator, test: PairDataset, device: torch.device, seed: int) -> dict:
    """Mean L1 (on [0, 1]) of generated faces and of the roughs themselves to the real faces."""
    loader = DataLoader(test, batch_size=32, shuffle=False)
    gen = base = 0.0
    with isolated_rng(device):
        torch.manual_seed(seed)
        for rough_u8, real_u8 in loader:
            rough, real = to_model_range(rough_u8.to(device)), to_model_range(real_u8.to(device))
            fake, _, _ = model(rough)
            gen += (fake - real).abs().sum().item() / 2
            base += (rough - real).abs().sum().item() / 2
    n = len(test) * 3 * test.image_size**2
    return {"test_l1": gen / n, "test_l1_rough": base / n}


# --------------------------------------------------------------------------- the loop


class SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, _frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _loader(dataset: PairDataset, sampler, cfg: TrainConfig, env: DistEnv) -> DataLoader:
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=env.device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def train(cfg: TrainConfig, env: DistEnv, paths: TrainPaths, recipe: dict[str, Any]) -> TrainResult:
    train_set, test_set = PairDataset(*paths.split("train")), PairDataset(*paths.split("test"))
    steps_per_epoch = len(train_set) // (cfg.batch_size * env.world_size)
    if steps_per_epoch == 0:
        raise UserError(
            f"train.batch_size = {cfg.batch_size} × {env.world_size} process(es) exceeds the "
            f"{len(train_set)} training images; lower train.batch_size"
        )
    total = cfg.epochs * steps_per_epoch
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    gcfg = generator_config(cfg, train_set.image_size)
    models = build_models(cfg, gcfg, env)
    data = data_identity(paths.data, train_set.image_size, len(train_set), recipe)
    ident = checkpoint_identity(cfg, data)
    ckpt = load_resumable_checkpoint(paths.checkpoint, ident)
    if ckpt is None:
        torch.manual_seed(cfg.seed + env.rank)
        step = 0
    else:
        step = restore(models, ckpt, env)
        log.info("resuming from %s at step %d/%d", paths.checkpoint, step, total)
    del ckpt

    sampler = ResumableSampler(train_set, rank=env.rank, world_size=env.world_size, seed=cfg.seed)
    loader = _loader(train_set, sampler, cfg, env)
    n_show = min(cfg.n_samples, len(test_set))
    show = [torch.stack(t) for t in zip(*(test_set[i] for i in range(n_show)), strict=True)]
    show_rough, show_real = (to_model_range(t.to(env.device)) for t in show)

    live = None
    if env.is_main:
        from dvclive import Live

        live = Live(str(paths.live_dir), resume=step > 0, dvcyaml=False, save_dvc_exp=False)
    flag = SignalFlag()
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not env.is_main)
    t0, seen = time.perf_counter(), 0
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, start=offset * cfg.batch_size)
            set_lr(models, cfg, epoch)
            for batch in loader:
                rough, real = prepare_batch(batch, cfg, env.device)
                losses = train_step(models, rough, real, cfg)
                _check_finite(losses, step + 1, paths.checkpoint, env)
                update_ema(models.G_ema, models.g, cfg.ema_decay, step)
                step += 1
                seen += rough.shape[0] * env.world_size
                bar.update()
                if live is not None and step % cfg.log_every == 0:
                    rate = seen / (time.perf_counter() - t0)
                    _log_scalars(live, step, losses, models, rate)
                    bar.set_postfix(loss_g=f"{losses['loss_g']:.3f}", img_s=f"{rate:.1f}")
                stop = any_rank(flag.signum is not None, env)
                if stop or step % cfg.ckpt_every == 0 or step % steps_per_epoch == 0:
                    _save(paths.checkpoint, models, step, total, ident, env)
                if stop:
                    raise StopRequested(flag.signum or signal.SIGTERM)
                if step % steps_per_epoch == 0:
                    break
            if live is not None:
                grid = sample_grid(models.G_ema, show_rough, show_real, cfg.seed)
                live.log_image(f"samples/{epoch:04d}.png", grid)
    finally:
        bar.close()
        flag.restore()
        if live is not None:
            live.end()

    rate = seen / max(time.perf_counter() - t0, 1e-9)
    result = TrainResult(steps=step)
    if env.is_main:
        result.metrics = _export(models, loader, sampler, test_set, cfg, paths, recipe, env)
        save_checkpoint(paths.checkpoint, models, step, total, ident, finished=True)
        result.metrics |= {"images_per_s": round(rate, 2), "steps": step, "epochs": cfg.epochs}
        paths.metrics.parent.mkdir(parents=True, exist_ok=True)
        paths.metrics.write_text(json.dumps(result.metrics, indent=2) + "\n")
    barrier(env)
    return result


def _check_finite(
    losses: dict[str, torch.Tensor], step: int, ckpt_path: Path, env: DistEnv
) -> None:
    """Stop every rank together if any rank's losses are not finite."""
    values = torch.stack([v.float() for v in losses.values()])
    if not any_rank(not bool(torch.isfinite(values).all()), env):
        return
    bad = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
    raise NonFiniteLoss(
        f"non-finite loss at step {step} ({bad}). The last good checkpoint {ckpt_path} was left "
        "as it was; lower train.lr_g/train.lr_d or set train.amp: false, then re-run"
    )


def _save(path: Path, models: Models, step: int, total: int, ident: dict, env: DistEnv) -> None:
    if env.is_main:
        save_checkpoint(path, models, step, total, ident)
    barrier(env)


def _log_scalars(live, step: int, losses: dict, models: Models, rate: float) -> None:
    live.step = step
    for name, value in losses.items():
        live.log_metric(f"train/{name}", round(float(value), 5))
    live.log_metric("train/lr_g", models.opt_g.param_groups[0]["lr"])
    live.log_metric("train/lr_d", models.opt_d.param_groups[0]["lr"])
    live.log_metric("train/images_per_s", round(rate, 2))
    live.make_summary()


def _export(
    models: Models,
    loader: DataLoader,
    sampler: ResumableSampler,
    test_set: PairDataset,
    cfg: TrainConfig,
    paths: TrainPaths,
    recipe: dict[str, Any],
    env: DistEnv,
) -> dict[str, float]:
    """Write the EMA generator (BatchNorm re-estimated) and return its test L1 numbers."""
    final = to_plain_batchnorm(copy.deepcopy(models.G_ema))  # rank 0 runs it alone
    sampler.set_epoch(cfg.epochs)
    recompute_bn_stats(final, loader, cfg, cfg.bn_batches)
    with atomic_path(paths.generator) as tmp:
        torch.save(generator_state(final, recipe), tmp)
    metrics = test_l1(final, test_set, env.device, cfg.seed)
    log.info(
        "test L1: generated %.4f vs rough %.4f (lower is better)",
        metrics["test_l1"],
        metrics["test_l1_rough"],
    )
    return {k: round(v, 6) for k, v in metrics.items()}
