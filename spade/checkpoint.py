"""Checkpoints (resumable training state) and the exported generator file.

A checkpoint is a plain dict of state_dicts + step + RNG states + the parameters that define the
run, written atomically and read with `weights_only=True`. The generator file holds the EMA
generator's weights, the config needed to rebuild it, and the roughen recipe for `--roughen`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from spade.config import TRAIN_ARCH_KEYS, TRAIN_BOOKKEEPING_KEYS, TrainConfig, to_dict
from spade.dist import DistEnv
from spade.errors import UserError
from spade.images import atomic_path
from spade.networks import GeneratorConfig, StyledGenerator

if TYPE_CHECKING:
    from spade.train import Models

log = logging.getLogger(__name__)

GENERATOR_FORMAT = "spade-anime-generator"
GENERATOR_VERSION = 1


def checkpoint_identity(cfg: TrainConfig, data: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must share with the current run to be resumed: the training parameters
    (but bookkeeping) and a description of the data (size, count, recipe, manifest hash)."""
    ident = {k: v for k, v in to_dict(cfg).items() if k not in TRAIN_BOOKKEEPING_KEYS}
    return ident | data


def data_identity(data_dir: Path, image_size: int, n_train: int, recipe: dict) -> dict[str, Any]:
    manifest = data_dir / "sampled" / "manifest.csv"
    digest = hashlib.sha1(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    return {"image_size": image_size, "n_train": n_train, "recipe": recipe, "manifest": digest}


def save_checkpoint(
    path: Path, models: Models, step: int, total: int, ident: dict, *, finished: bool = False
) -> None:
    """`finished` is set only once the generator file is written, so an interruption during
    the export resumes (and redoes only the export) instead of starting over."""
    state = {
        "step": step,
        "total_steps": total,
        "finished": finished,
        "identity": ident,
        "G": models.g.state_dict(),
        "D": models.d.state_dict(),
        "G_ema": models.G_ema.state_dict(),
        "opt_g": models.opt_g.state_dict(),
        "opt_d": models.opt_d.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resumable_checkpoint(path: Path, ident: dict) -> dict | None:
    """The checkpoint to resume from, None to start fresh, or a UserError if it conflicts."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); "
            "delete it to start over"
        ) from e
    if ckpt.get("finished"):
        log.info("%s holds a finished run: starting a new one", path)
        return None
    old = ckpt.get("identity", {})
    changed = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
    if changed:
        what = ", ".join(f"{k}: {old.get(k)!r} → {ident.get(k)!r}" for k in changed)
        arch = [k for k in changed if k in TRAIN_ARCH_KEYS | {"image_size"}]
        why = (
            f"the networks differ ({', '.join(arch)}), so its weights cannot be loaded. "
            if arch
            else ""
        )
        raise UserError(
            f"{path} holds an unfinished run (step {ckpt['step']}/{ckpt['total_steps']}) made "
            f"with different parameters ({what}); {why}To resume it, restore those parameters; "
            f"to start over, delete it: rm {path}"
        )
    return ckpt


def restore(models: Models, ckpt: dict, env: DistEnv) -> int:
    models.g.load_state_dict(ckpt["G"])
    models.d.load_state_dict(ckpt["D"])
    models.G_ema.load_state_dict(ckpt["G_ema"])
    models.opt_g.load_state_dict(ckpt["opt_g"])
    models.opt_d.load_state_dict(ckpt["opt_d"])
    if env.is_main:
        torch.set_rng_state(ckpt["rng_cpu"])
        if torch.cuda.is_available() and ckpt["rng_cuda"] is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"])  # the current device's
    else:  # other ranks: a fresh stream that still depends only on (seed, rank, step)
        torch.manual_seed(hash((ckpt["identity"]["seed"], env.rank, ckpt["step"])) % 2**63)
    return int(ckpt["step"])


def generator_state(model: StyledGenerator, recipe: dict[str, Any]) -> dict[str, Any]:
    """The generator file's contents (`model` must hold plain BatchNorm, see below)."""
    return {
        "format": GENERATOR_FORMAT,
        "version": GENERATOR_VERSION,
        "config": asdict(model.cfg),
        "recipe": recipe,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
    }


def to_plain_batchnorm(module: nn.Module) -> nn.Module:
    """Replace SyncBatchNorm by BatchNorm2d in place (same statistics, same device).

    Needed before rank 0 alone runs the model in training mode: SyncBatchNorm would wait for
    the other ranks.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            bn.to(child.running_mean.device).load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            to_plain_batchnorm(child)
    return module


def load_generator(path: Path | str, device: torch.device) -> tuple[StyledGenerator, dict]:
    """Rebuild the exported EMA generator; returns (model in eval mode, the whole file's dict)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found: train one with `dvc repro train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable model file ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != GENERATOR_FORMAT:
        raise UserError(f"{path} is not a spade-anime generator file (models/generator.pt)")
    if state.get("version") != GENERATOR_VERSION:
        raise UserError(
            f"{path} has format version {state.get('version')}; this code reads version "
            f"{GENERATOR_VERSION}: retrain with `dvc repro train`"
        )
    model = StyledGenerator(GeneratorConfig.from_dict(state["config"]))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise UserError(f"{path} does not match its own config: {e}") from e
    return model.to(device).eval().requires_grad_(False), state
