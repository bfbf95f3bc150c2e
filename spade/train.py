"""The training loop: TTUR hinge GAN with EMA, AMP, DDP, atomic resumable checkpoints.

Read top to bottom: `train()` builds everything, resumes if it can, then runs `train_step` until
the last epoch, checkpointing every `ckpt_every` steps, at each epoch end and on SIGINT/SIGTERM.
All randomness of a step comes from the global torch RNG (saved in checkpoints), so a resumed
run repeats an uninterrupted one exactly on the CPU. Every process draws the random numbers of
the whole global batch and uses its own rows (`DistEnv.stream`), so the run does not depend on
the number of processes beyond BatchNorm (per process on the CPU) and float rounding.

Host syncs are kept out of the step: non-finite losses are noticed on the device and checked,
with the weights, every `log_every` steps and always before a checkpoint is written, so the
checkpoint on disk is always a good one.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader
from tqdm import tqdm

from spade.checkpoint import (
    load_resumable_checkpoint,
    mark_diverged,
    save_torch,
    write_generator,
)
from spade.config import Recipe, TrainConfig
from spade.data import PairDataset, ResumableSampler, to_model
from spade.dist import DistEnv, barrier, max_over_ranks, mean_over_ranks, to_plain_batchnorm
from spade.errors import UserError
from spade.files import write_json
from spade.images import comparison_grid
from spade.inference import generate_faces
from spade.losses import (
    d_hinge_loss,
    feature_matching_loss,
    g_hinge_loss,
    kl_loss,
    mode_seeking_loss,
)
from spade.metrics.paired import paired_metrics, worse_than_rough
from spade.networks import GLOBAL_RNG, RandomStream
from spade.train_state import TrainState, build_train_state

log = logging.getLogger(__name__)

TEST_BATCH = 32


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
class TrainResult:
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)


class StopRequested(Exception):
    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class NonFiniteLoss(UserError):
    pass


# --------------------------------------------------------------------------- set-up


def run_identity(cfg: TrainConfig, paths: TrainPaths, n_train: int, size: int, recipe: Recipe):
    """What a checkpoint must share with this run to be resumed: every parameter that can
    change the model, and the data (size, count, recipe, manifest hash)."""
    manifest = paths.data / "sampled" / "manifest.csv"
    digest = hashlib.sha1(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    data = {"image_size": size, "n_train": n_train, "recipe": recipe.model_dump()}
    return cfg.output_params() | data | {"manifest": digest}


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """1 until the last `decay_epochs` epochs, then linearly down (never reaching 0 in training)."""
    if cfg.decay_epochs == 0:
        return 1.0
    return min(1.0, (cfg.epochs - epoch) / cfg.decay_epochs)


def set_lr(state: TrainState, cfg: TrainConfig, epoch: int) -> None:
    f = lr_factor(cfg, epoch)
    for opt, lr in ((state.opt_g, cfg.lr_g), (state.opt_d, cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * f


def isolated_rng(device: torch.device):
    """Side work on the global RNG (BatchNorm re-estimation) without moving training's stream."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


# --------------------------------------------------------------------------- one step


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def prepare_batch(
    batch: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    device: torch.device,
    rng: RandomStream = GLOBAL_RNG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (rough, real) → float [-1, 1] on the device, flipped together at random."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    rough, real = (to_model(x, device, memory_format) for x in batch)
    if cfg.flip:
        flip = (rng.rand(rough.shape[0], device=device) < 0.5).view(-1, 1, 1, 1)
        rough = torch.where(flip, rough.flip(-1), rough)
        real = torch.where(flip, real.flip(-1), real)
    return rough, real


def train_step(
    state: TrainState,
    rough: torch.Tensor,
    real: torch.Tensor,
    cfg: TrainConfig,
    rng: RandomStream = GLOBAL_RNG,
) -> dict[str, torch.Tensor]:
    """One discriminator update, then one generator update. Returns detached losses.

    The generator runs once per step (as in pix2pix): its output, detached, trains D; then the
    same output, through the updated D, trains G. The real images' D features from the D pass
    serve as feature-matching targets, so D also sees the reals only once.
    """
    device = rough.device
    with _autocast(cfg, device):
        if cfg.lambda_ms > 0:
            fake, fake_b, z, z_b = _two_styles(state, rough, cfg, rng)
            mu = logvar = None
        else:  # z drawn inside the generator (from the style encoder with use_vae)
            fake, mu, logvar = state.g(rough, style=real, rng=rng)
        fake_pair, real_pair = torch.cat([fake, rough], 1), torch.cat([real, rough], 1)
        # Discriminator: hinge on one batch of (detached) fakes and reals.
        out = state.d(torch.cat([fake_pair.detach(), real_pair], dim=0))
        fake_out = [[t[: len(rough)] for t in scale] for scale in out]
        real_out = [[t[len(rough) :] for t in scale] for scale in out]
        loss_d = d_hinge_loss(real_out, fake_out)
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.float().backward()
    state.opt_d.step()

    # Generator: D is frozen and used unwrapped, so DDP only syncs the generator's gradients.
    d = state.bare_d
    d.requires_grad_(False)
    with _autocast(cfg, device):
        fake_out = d(fake_pair)
        losses = {"gan": cfg.lambda_gan * g_hinge_loss(fake_out)}
        if cfg.lambda_fm > 0:
            losses["fm"] = cfg.lambda_fm * feature_matching_loss(real_out, fake_out)
        if cfg.lambda_l1 > 0:
            losses["l1"] = cfg.lambda_l1 * F.l1_loss(fake.float(), real)
        if state.vgg is not None:
            losses["vgg"] = cfg.lambda_vgg * state.vgg(fake.float(), real)
        if mu is not None:
            losses["kl"] = cfg.lambda_kl * kl_loss(mu.float(), logvar.float())
        if cfg.lambda_ms > 0:
            n = len(fake_b)
            losses["ms"] = cfg.lambda_ms * mode_seeking_loss(fake[:n], fake_b, z[:n], z_b)
        loss_g = torch.stack([v.float() for v in losses.values()]).sum()
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    d.requires_grad_(True)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()} | {
        f"loss_{k}": v.detach() for k, v in losses.items()
    }


def _two_styles(state: TrainState, rough: torch.Tensor, cfg: TrainConfig, rng: RandomStream):
    """Faces for the batch and, for its first half, a second face from another z: one
    generator pass over both, for the mode-seeking term. Returns (fake, fake_b, z, z_b)."""
    n = max(1, len(rough) // 2)
    z = rng.randn(len(rough), cfg.arch.z_dim, device=rough.device)
    z_b = rng.randn(n, cfg.arch.z_dim, device=rough.device)
    out, _, _ = state.g(torch.cat([rough, rough[:n]]), z=torch.cat([z, z_b]), rng=rng)
    return out[: len(rough)], out[len(rough) :], z, z_b


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with a warm-up (decay ≤ (1+t)/(10+t)); buffers are copied.

    One multi-tensor kernel for all parameters (and one for the buffers), not one per tensor.
    """
    decay = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))


# --------------------------------------------------------------------------- health and signals


class Health:
    """Remembers the first step with a non-finite loss, on the device: no host sync per step."""

    def __init__(self, device: torch.device):
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)

    def observe(self, losses: dict[str, torch.Tensor], step: int) -> None:
        ok = torch.isfinite(torch.stack([v.float() for v in losses.values()]).sum())
        self.first_bad = torch.where((self.first_bad == 0) & ~ok, step, self.first_bad)


class SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks at its sync points."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, _frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class SyncPoint:
    """What every rank agrees on every `log_every` steps and before each checkpoint."""

    stop: bool
    losses: dict[str, float]


def sync_point(
    state: TrainState,
    health: Health,
    losses: dict[str, torch.Tensor],
    step: int,
    flag: SignalFlag,
    env: DistEnv,
    paths: TrainPaths,
) -> SyncPoint:
    """One host sync: stop on any rank's signal, fail on any rank's non-finite loss or weights,
    and the losses averaged over ranks. A failure marks the last good checkpoint for a retry."""
    bad_weights = torch.where(state.weights_finite(), 0, step)
    first_bad = torch.where(health.first_bad > 0, health.first_bad, bad_weights)
    stop = torch.tensor(float(flag.signum is not None), device=env.device)
    flags = max_over_ranks(torch.stack([first_bad.float(), stop]), env).tolist()
    mean = mean_over_ranks(torch.stack([v.float() for v in losses.values()]), env).tolist()
    values = dict(zip(losses, mean, strict=True))
    if flags[0] > 0:
        raise _diverged(int(flags[0]), values, paths.checkpoint, env)
    return SyncPoint(stop=flags[1] > 0, losses=values)


def _diverged(first_bad: int, losses: dict[str, float], ckpt: Path, env: DistEnv) -> NonFiniteLoss:
    good = mark_diverged(ckpt, first_bad) if env.is_main else None
    barrier(env)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
    where = (
        f"{ckpt} (step {good}) holds the last good weights and was kept; re-running with a lower "
        "train.lr_g / train.lr_d (or train.amp: false) resumes from it, e.g. "
        "`dvc exp run -S train.lr_g=...`"
        if good is not None
        else "no checkpoint was written yet; lower train.lr_g / train.lr_d and re-run"
    )
    return NonFiniteLoss(f"non-finite loss or weights at step {first_bad} ({shown}). {where}")


# --------------------------------------------------------------------------- export


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


def held_out_l1(model: nn.Module, test_set: PairDataset, seed: int) -> dict[str, Any]:
    """Paired L1 of generated faces and of the roughs themselves against the real faces: the
    same function `evaluate` uses, so the numbers agree with metrics/eval.json."""
    roughs, real = (np.asarray(a) for a in test_set.arrays())
    generated = generate_faces(model, roughs, seed=seed, batch_size=TEST_BATCH)
    l1 = paired_metrics(generated, real)["l1"]
    l1_rough = paired_metrics(roughs, real)["l1"]
    return {
        "test_l1": round(l1, 6),
        "test_l1_rough": round(l1_rough, 6),
        "worse_than_rough": worse_than_rough(round(l1, 6), round(l1_rough, 6)),
    }


def export(
    state: TrainState,
    train_set: PairDataset,
    test_set: PairDataset,
    cfg: TrainConfig,
    paths: TrainPaths,
    recipe: Recipe,
) -> dict[str, Any]:
    """Rank 0: write the EMA generator (BatchNorm re-estimated) and return its test metrics."""
    final = to_plain_batchnorm(copy.deepcopy(state.g_ema))
    sampler = ResumableSampler(train_set, rank=0, world_size=1, seed=cfg.seed)
    sampler.set_epoch(cfg.epochs)  # the same batches, whatever the number of processes
    device = next(final.parameters()).device
    loader = make_loader(train_set, sampler, cfg.batch_size, cfg, device)
    recompute_bn_stats(final, loader, cfg, cfg.bn_batches)
    final.to(memory_format=torch.contiguous_format)  # as `load_generator` rebuilds it
    metrics = held_out_l1(final, test_set, cfg.seed)
    write_generator(paths.generator, final, recipe)
    log.info(
        "test L1: generated %.4f vs rough %.4f (lower is better)",
        metrics["test_l1"],
        metrics["test_l1_rough"],
    )
    return metrics


# --------------------------------------------------------------------------- the loop


def make_loader(
    dataset: PairDataset, sampler, batch_size: int, cfg: TrainConfig, device: torch.device
) -> DataLoader:
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def speed_flags(device: torch.device) -> None:
    """cuDNN autotuning and TF32 matrix units on CUDA (what fp32 runs use there too)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def _restore(state: TrainState, ckpt: dict[str, Any], env: DistEnv) -> int:
    """Weights, optimisers and the RNG stream (the same on every rank) of a checkpoint."""
    state.load_state_dict(ckpt)
    torch.set_rng_state(ckpt["rng_cpu"])
    if env.device.type == "cuda" and ckpt["rng_cuda"] is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"])  # the current device's
    return int(ckpt["step"])


def save_checkpoint(
    path: Path, state: TrainState, step: int, total: int, identity: dict, *, finished: bool = False
) -> None:
    """`finished` is set only once the generator file is written, so an interruption during
    the export resumes (and redoes only the export) instead of starting over."""
    save_torch(
        path,
        state.state_dict()
        | {
            "step": step,
            "total_steps": total,
            "finished": finished,
            "identity": identity,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        },
    )


def train(cfg: TrainConfig, env: DistEnv, paths: TrainPaths, recipe: Recipe) -> TrainResult:
    train_set, test_set = PairDataset(*paths.split("train")), PairDataset(*paths.split("test"))
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"train.batch_size = {cfg.batch_size} exceeds the {len(train_set)} training images;"
            " lower train.batch_size"
        )
    total = cfg.epochs * steps_per_epoch
    speed_flags(env.device)
    torch.manual_seed(cfg.seed)  # the same initial weights and random stream on every rank
    state = build_train_state(cfg, train_set.image_size, env)
    identity = run_identity(cfg, paths, len(train_set), train_set.image_size, recipe)
    ckpt = load_resumable_checkpoint(paths.checkpoint, identity)
    if ckpt is None:
        torch.manual_seed(cfg.seed)
        step = 0
    else:
        step = _restore(state, ckpt, env)
        log.info("resuming from %s at step %d/%d", paths.checkpoint, step, total)
    del ckpt

    sampler = ResumableSampler(train_set, rank=env.rank, world_size=env.world_size, seed=cfg.seed)
    loader = make_loader(train_set, sampler, cfg.batch_per_process, cfg, env.device)
    show = slice(0, min(cfg.n_samples, len(test_set)))
    show_rough, show_real = (np.asarray(a[show]) for a in test_set.arrays())

    live = None
    if env.is_main:
        from dvclive import Live

        live = Live(str(paths.live_dir), resume=step > 0, dvcyaml=False, save_dvc_exp=False)
    flag, health = SignalFlag(), Health(env.device)
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not env.is_main)
    t0, seen = time.perf_counter(), 0
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, start=offset * cfg.batch_per_process)
            set_lr(state, cfg, epoch)
            for batch in loader:
                rough, real = prepare_batch(batch, cfg, env.device, env.stream)
                losses = train_step(state, rough, real, cfg, env.stream)
                health.observe(losses, step + 1)
                update_ema(state.g_ema, state.bare_g, cfg.ema_decay, step)
                step += 1
                seen += cfg.batch_size
                bar.update()
                epoch_end = step % steps_per_epoch == 0
                save = epoch_end or step % cfg.ckpt_every == 0
                if save or step % cfg.log_every == 0:
                    point = sync_point(state, health, losses, step, flag, env, paths)
                    if live is not None and step % cfg.log_every == 0:
                        rate = seen / (time.perf_counter() - t0)
                        _log_scalars(live, step, point.losses, state, rate)
                        bar.set_postfix(loss_g=f"{point.losses['loss_g']:.3f}", img_s=f"{rate:.1f}")
                    if save or point.stop:
                        _save(paths.checkpoint, state, step, total, identity, env)
                    if point.stop:
                        raise StopRequested(flag.signum or signal.SIGTERM)
                if epoch_end:
                    break
            if live is not None:
                faces = generate_faces(state.g_ema, show_rough, seed=cfg.seed)
                grid = comparison_grid(show_rough, faces, show_real, len(faces))
                live.log_image(f"grids/{epoch:04d}.png", grid)
    finally:
        bar.close()
        flag.restore()
        if live is not None:
            live.end()

    result = TrainResult(steps=step)
    if env.is_main:
        result.metrics = export(state, train_set, test_set, cfg, paths, recipe)
        result.metrics |= {"steps": step, "epochs": cfg.epochs}
        write_json(paths.metrics, result.metrics)
        save_checkpoint(paths.checkpoint, state, step, total, identity, finished=True)
    barrier(env)
    return result


def _save(path: Path, state: TrainState, step: int, total: int, identity: dict, env: DistEnv):
    if env.is_main:
        save_checkpoint(path, state, step, total, identity)
    barrier(env)


def _log_scalars(live, step: int, losses: dict[str, float], state: TrainState, rate: float):
    live.step = step
    for name, value in losses.items():
        live.log_metric(f"train/{name}", round(value, 5))
    live.log_metric("train/lr_g", state.opt_g.param_groups[0]["lr"])
    live.log_metric("train/lr_d", state.opt_d.param_groups[0]["lr"])
    live.log_metric("train/images_per_s", round(rate, 2))
    live.make_summary()
