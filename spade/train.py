"""The training loop: TTUR hinge GAN with EMA, AMP, DDP, atomic resumable checkpoints.

Read top to bottom: `fit()` runs one `Job` (the GAN's, from `train()`, or the student's, from
`spade.distill`): it builds the networks, resumes if it can, then runs the job's step until the
last epoch, checkpointing every `ckpt_every` steps, at each epoch end and on SIGINT/SIGTERM.
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
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader
from tqdm import tqdm

from spade.checkpoint import (
    load_resumable_checkpoint,
    mark_diverged,
    restore_rng,
    run_identity,
    save_checkpoint,
    write_discriminator,
    write_generator,
)
from spade.config import LoopConfig, LoopRun, Recipe, TrainConfig
from spade.console import ignore_stop_signals
from spade.data import PairDataset, ResumableSampler, to_model
from spade.dist import (
    DistEnv,
    barrier,
    init_distributed,
    max_over_ranks,
    mean_over_ranks,
    relaunch_under_torchrun,
    shutdown,
    to_plain_batchnorm,
)
from spade.errors import UserError
from spade.files import atomic_paths, json_bytes, write_bytes
from spade.images import comparison_grid
from spade.inference import generate_faces, paired_faces
from spade.metrics.paired import paired_metrics, worse_than_rough
from spade.networks import GLOBAL_RNG, FaceModel, RandomStream
from spade.paths import (
    DATA,
    DISCRIMINATOR,
    GENERATOR,
    MANIFEST,
    ROUGHS,
    SAMPLED,
    TRAIN_CHECKPOINT,
    TRAIN_LIVE,
    TRAIN_METRICS,
    split_array,
)
from spade.steps import Losses, train_step
from spade.throughput import Throughput, peak_tflops, step_flops
from spade.train_state import TrainState, build_train_state

log = logging.getLogger(__name__)

TEST_BATCH = 32


@dataclass
class TrainPaths:
    """Where a run reads its data and writes its checkpoint, model, logs and metrics."""

    data: Path = DATA
    checkpoint: Path = TRAIN_CHECKPOINT
    generator: Path = GENERATOR
    live_dir: Path = TRAIN_LIVE
    metrics: Path = TRAIN_METRICS
    discriminator: Path | None = DISCRIMINATOR

    def split(self, split: str) -> tuple[Path, Path]:
        """(roughs, real faces) of `split`, under `data` as `spade.paths` lays it out."""
        return (
            split_array(self.data / ROUGHS.name, split),
            split_array(self.data / SAMPLED.name, split),
        )

    @property
    def manifest(self) -> Path:
        return self.data / SAMPLED.name / MANIFEST.name


Step = Callable[[TrainState, torch.Tensor, torch.Tensor, Any, RandomStream], Losses]


@dataclass
class Job:
    """One run of the loop: how to build what it trains, one step of it, and where it writes.
    The GAN (`train`) and distillation (`spade.distill`) are two jobs of the same loop."""

    cfg: LoopConfig
    run: LoopRun  # speed and logging (`run.train`, `run.distill`): no byte of the model
    paths: TrainPaths
    recipe: Recipe
    build: Callable[[int, DistEnv], TrainState]  # (image size, env) → networks and optimisers
    step: Step
    # The run's inputs beyond its config and data (distillation: the teacher's digest); with
    # them, `run_identity` is what a checkpoint must match to be resumed.
    upstream: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cfg.SECTION


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


def lr_factor(cfg: LoopConfig, epoch: int) -> float:
    """1 until the last `decay_epochs` epochs, then linearly down (never reaching 0 in training)."""
    if cfg.decay_epochs == 0:
        return 1.0
    return min(1.0, (cfg.epochs - epoch) / cfg.decay_epochs)


def set_lr(state: TrainState, cfg: LoopConfig, epoch: int) -> None:
    f = lr_factor(cfg, epoch)
    for opt, lr in ((state.opt_g, cfg.lr_g), (state.opt_d, cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * f


def isolated_rng(device: torch.device):
    """Side work on the global RNG (BatchNorm re-estimation) without moving training's stream."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def prepare_batch(
    batch: tuple[torch.Tensor, torch.Tensor],
    cfg: LoopConfig,
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
    job: Job,
    state: TrainState,
    health: Health,
    losses: dict[str, torch.Tensor],
    step: int,
    flag: SignalFlag,
    env: DistEnv,
    identity: dict[str, Any],
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
        raise _diverged(job, int(flags[0]), values, identity, env)
    return SyncPoint(stop=flags[1] > 0, losses=values)


def _diverged(
    job: Job, first_bad: int, losses: dict[str, float], identity: dict, env: DistEnv
) -> NonFiniteLoss:
    ckpt, name = job.paths.checkpoint, job.name
    good = mark_diverged(ckpt, first_bad, identity) if env.is_main else None
    barrier(env)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
    where = (
        f"{ckpt} (step {good}) holds the last good weights and was kept; re-running with a lower "
        f"{name}.lr_g / {name}.lr_d (or {name}.amp: false) resumes from it, e.g. "
        f"`dvc exp run -S {name}.lr_g=...`"
        if good is not None
        else f"this run wrote no checkpoint yet; lower {name}.lr_g / {name}.lr_d and re-run"
    )
    return NonFiniteLoss(f"non-finite loss or weights at step {first_bad} ({shown}). {where}")


# --------------------------------------------------------------------------- export


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader: DataLoader, cfg: LoopConfig, n: int) -> None:
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


def held_out_l1(model: nn.Module, test_set: PairDataset, seed: int, section: str) -> dict[str, Any]:
    """Paired L1 of generated faces (`paired_faces`) and of the roughs themselves against the
    real faces: as `evaluate` computes it, so the numbers agree with metrics/eval.json."""
    roughs, real = (np.asarray(a) for a in test_set.arrays())
    generated = paired_faces(model, roughs, real, seed=seed, batch_size=TEST_BATCH)
    l1 = paired_metrics(generated, real)["l1"]
    l1_rough = paired_metrics(roughs, real)["l1"]
    return {
        "test_l1": round(l1, 6),
        "test_l1_rough": round(l1_rough, 6),
        "worse_than_rough": worse_than_rough(round(l1, 6), round(l1_rough, 6), section),
    }


def export(
    job: Job, state: TrainState, train_set: PairDataset, test_set: PairDataset, steps: int
) -> dict[str, Any]:
    """Rank 0: the EMA generator, BatchNorm re-estimated, written with its metrics (and, for
    the GAN, the discriminator, from which distillation starts its own) all together."""
    cfg, paths = job.cfg, job.paths
    final: FaceModel = to_plain_batchnorm(copy.deepcopy(state.g_ema))
    sampler = ResumableSampler(train_set, rank=0, world_size=1, seed=cfg.seed)
    sampler.set_epoch(cfg.epochs)  # the same batches, whatever the number of processes
    device = next(final.parameters()).device
    loader = make_loader(train_set, sampler, cfg.batch_size, cfg.seed, job.run, device)
    recompute_bn_stats(final, loader, cfg, cfg.bn_batches)
    final.to(memory_format=torch.contiguous_format)  # as `load_generator` rebuilds it
    metrics = held_out_l1(final, test_set, cfg.seed, cfg.SECTION)
    metrics |= {"steps": steps, "epochs": cfg.epochs}
    files = [paths.generator, paths.metrics]
    files += [paths.discriminator] if paths.discriminator is not None else []
    with atomic_paths(files) as (generator, metrics_file, *discriminator):
        write_generator(generator, final, job.recipe)
        metrics_file.write_bytes(json_bytes(metrics))
        if discriminator:
            disc = to_plain_batchnorm(copy.deepcopy(state.bare_d)).to(
                memory_format=torch.contiguous_format
            )
            write_discriminator(discriminator[0], disc)
    log.info(
        "test L1: generated %.4f vs rough %.4f (lower is better)",
        metrics["test_l1"],
        metrics["test_l1_rough"],
    )
    return metrics


# --------------------------------------------------------------------------- the loop


def make_loader(
    dataset: PairDataset, sampler, batch_size: int, seed: int, run: LoopRun, device: torch.device
) -> DataLoader:
    workers = run.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=ignore_stop_signals,  # SIGTERM to the group: the loop checkpoints first
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def speed_flags(device: torch.device) -> None:
    """cuDNN autotuning and TF32 matrix units on CUDA (what fp32 runs use there too)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def fit(job: Job, env: DistEnv) -> TrainResult:
    """Build, resume if a checkpoint of this run exists, train to the last epoch, export."""
    cfg, run, paths, name = job.cfg, job.run, job.paths, job.name
    train_set, test_set = PairDataset(*paths.split("train")), PairDataset(*paths.split("test"))
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"{name}.batch_size = {cfg.batch_size} exceeds the {len(train_set)} training images;"
            f" lower {name}.batch_size"
        )
    total = cfg.epochs * steps_per_epoch
    speed_flags(env.device)
    torch.manual_seed(cfg.seed)  # the same initial weights and random stream on every rank
    state = job.build(train_set.image_size, env)
    size, n_train = train_set.image_size, len(train_set)
    identity = run_identity(cfg, paths.manifest, n_train, size, job.recipe, **job.upstream)
    ckpt = load_resumable_checkpoint(paths.checkpoint, identity)
    if ckpt is None:
        torch.manual_seed(cfg.seed)
        step = 0
    else:
        state.load_state_dict(ckpt)  # weights and optimisers
        step = restore_rng(ckpt, env.device)  # the same stream on every rank
        log.info("resuming from %s at step %d/%d", paths.checkpoint, step, total)
    del ckpt

    sampler = ResumableSampler(train_set, rank=env.rank, world_size=env.world_size, seed=cfg.seed)
    loader = make_loader(train_set, sampler, cfg.batch_per_process, cfg.seed, run, env.device)
    show = slice(0, min(run.n_samples, len(test_set)))
    show_rough, show_real = (np.asarray(a[show]) for a in test_set.arrays())

    live = open_live(paths.live_dir, step) if env.is_main else None
    flag, health = SignalFlag(), Health(env.device)
    bar = tqdm(total=total, initial=step, desc=name, unit="step", disable=not env.is_main)
    speed = measure_speed(state, cfg, train_set.image_size, env) if env.is_main else None
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, start=offset * cfg.batch_per_process)
            set_lr(state, cfg, epoch)
            for batch in loader:
                rough, real = prepare_batch(batch, cfg, env.device, env.stream)
                losses = job.step(state, rough, real, cfg, env.stream)
                health.observe(losses, step + 1)
                update_ema(state.g_ema, state.bare_g, cfg.ema_decay, step)
                step += 1
                if speed is not None:
                    speed.update(cfg.batch_size)
                bar.update()
                epoch_end = step % steps_per_epoch == 0
                save = epoch_end or step % run.ckpt_every == 0
                # One process stops at the step a signal arrives; several agree at a sync point.
                signalled = flag.signum is not None and not env.distributed
                if save or signalled or step % run.log_every == 0:
                    point = sync_point(job, state, health, losses, step, flag, env, identity)
                    if live is not None and step % run.log_every == 0:
                        _log_scalars(live, name, step, point.losses, state)
                        loss_g = f"{point.losses['loss_g']:.3f}"
                        bar.set_postfix({"loss_g": loss_g} | speed.summary())  # in this order
                    if save or point.stop:
                        _save(paths.checkpoint, state, step, total, identity, env)
                    if point.stop:
                        raise StopRequested(flag.signum or signal.SIGTERM)
                if epoch_end:
                    break
            if live is not None:
                shown = ", ".join(f"{k} {v}" for k, v in speed.summary().items())
                log.info("%s epoch %d/%d: %s", name, epoch + 1, cfg.epochs, shown)
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
        result.metrics = export(job, state, train_set, test_set, step)
        save_checkpoint(paths.checkpoint, state.state_dict(), step, total, identity, finished=True)
    barrier(env)
    return result


def measure_speed(state: TrainState, cfg: LoopConfig, image_size: int, env: DistEnv) -> Throughput:
    """Rank 0's throughput meter: FLOPs per image counted once, the device's peak if known. Its
    numbers go to the progress bar and the log, not to dvclive (see `spade.throughput`)."""
    flops = step_flops(state, cfg, image_size, env.device)
    peak = peak_tflops(env.device, bf16=cfg.amp)
    log.info(
        "%s: about %.2f GFLOP per image and step; %s",
        cfg.SECTION,
        flops / 1e9,
        f"MFU against a peak of {peak} TFLOP/s" if peak else "no known peak: GFLOP/s achieved",
    )
    # cfg.batch_size images a step over all processes, each on a device of this peak.
    return Throughput(flops, peak * env.world_size if peak else None)


def open_live(live_dir: Path, step: int):
    """DVCLive, started fresh or resumed at `step`. A run killed after its last checkpoint may
    have logged later steps, which the resumed run logs again, and may have been cut off while
    writing its summary: those rows are dropped and that summary discarded, so every plot has
    each step once and resuming never fails on a half-written file."""
    from dvclive import Live

    if step > 0:
        for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
            header, *rows = tsv.read_text().splitlines(keepends=True)
            column = header.rstrip("\n").split("\t").index("step")
            kept = [r for r in rows if int(r.split("\t")[column]) <= step]
            if len(kept) < len(rows):
                write_bytes(tsv, (header + "".join(kept)).encode())
        summary = live_dir / "metrics.json"
        try:
            json.loads(summary.read_text())
        except (OSError, ValueError):
            summary.unlink(missing_ok=True)
    return Live(str(live_dir), resume=step > 0, dvcyaml=False, save_dvc_exp=False)


def _save(path: Path, state: TrainState, step: int, total: int, identity: dict, env: DistEnv):
    if env.is_main:
        save_checkpoint(path, state.state_dict(), step, total, identity)
    barrier(env)


def _log_scalars(live, name: str, step: int, losses: dict[str, float], state: TrainState):
    """Losses and learning rates: what the same params and data reproduce byte for byte. The
    throughput and MFU, which depend on the machine and the moment, go to the progress bar and
    the log only (`measure_speed`): dvclive/ is a tracked output, the same on every run."""
    live.step = step
    for key, value in losses.items():
        live.log_metric(f"{name}/{key}", round(value, 5))
    live.log_metric(f"{name}/lr_g", state.opt_g.param_groups[0]["lr"])
    live.log_metric(f"{name}/lr_d", state.opt_d.param_groups[0]["lr"])
    live.make_summary()


def launch(script: str, cfg: LoopConfig, work: Callable[[DistEnv], TrainResult]) -> None:
    """A training stage's process: re-launched under torchrun for several processes; rank 0
    alone logs; a stop signal ends it, after its checkpoint, with status 128 + the signal."""
    relaunch_under_torchrun(script, cfg)
    env = init_distributed(cfg)
    if not env.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        work(env)
    except StopRequested as e:
        if env.is_main:
            log.warning("%s: checkpoint saved; run `dvc repro` again to resume", e)
        sys.exit(128 + e.signum)
    finally:
        shutdown(env)


# --------------------------------------------------------------------------- the GAN


def train(
    cfg: TrainConfig, run: LoopRun, env: DistEnv, paths: TrainPaths, recipe: Recipe
) -> TrainResult:
    """Train the GAN: a new generator and discriminator, `train_step` at each step."""

    def build(image_size: int, env: DistEnv) -> TrainState:
        return build_train_state(cfg, image_size, env)

    return fit(Job(cfg, run, paths, recipe, build=build, step=train_step), env)
