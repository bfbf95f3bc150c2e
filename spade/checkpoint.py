"""The files training writes, and reads back: the resumable checkpoint, the exported generator
(or student) and the discriminator.

A checkpoint is a plain dict (state_dicts, step, RNG states and the `identity` of the run: the
parameters that can change the model, and a description of the data), written atomically and
read with `weights_only=True`. The generator file holds the EMA generator's weights, its
architecture (`train.arch`) and image size, and the roughen recipe for `generate --roughen`; the
discriminator file lets distillation start its discriminator from the teacher's. All are written
through memory, so the same content gives the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from spade.config import DiscriminatorArch, GeneratorArch, LoopConfig, Recipe
from spade.errors import UserError
from spade.files import load_torch, save_torch
from spade.images import require_regular_file, shown
from spade.networks import FaceModel, MultiscaleDiscriminator

log = logging.getLogger(__name__)

GENERATOR_FORMAT = "spade-anime-generator"
GENERATOR_VERSION = 3
DISCRIMINATOR_FORMAT = "spade-anime-discriminator"
# Keys a diverged run may change when it resumes from its last good checkpoint.
RETRY_KEYS = frozenset({"lr_g", "lr_d", "amp"})


# --------------------------------------------------------------------------- checkpoints


def run_identity(
    cfg: LoopConfig, manifest: Path, n_train: int, size: int, recipe: Recipe, **more: Any
) -> dict[str, Any]:
    """What a checkpoint must share with this run to be resumed: every parameter that can
    change the model, the data (size, count, recipe, manifest hash) and `more` (the teacher)."""
    digest = hashlib.sha1(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    data = {"image_size": size, "n_train": n_train, "recipe": recipe.model_dump()}
    return cfg.flat() | data | {"manifest": digest} | more


def save_checkpoint(
    path: Path,
    weights: dict[str, Any],
    step: int,
    total: int,
    identity: dict[str, Any],
    *,
    finished: bool = False,
) -> None:
    """The run's weights and optimisers, where it stands and the RNG streams. `finished` is set
    only once the model file is written, so an interruption during the export resumes (and
    redoes only the export) instead of starting over."""
    save_torch(
        path,
        weights
        | {
            "step": step,
            "total_steps": total,
            "finished": finished,
            "identity": identity,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        },
    )


def restore_rng(ckpt: dict[str, Any], device: torch.device) -> int:
    """Put back the RNG streams `save_checkpoint` stored (the CUDA one on the current device);
    returns the step the checkpoint was taken at."""
    torch.set_rng_state(ckpt["rng_cpu"])
    if device.type == "cuda" and ckpt["rng_cuda"] is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"])
    return int(ckpt["step"])


def load_resumable_checkpoint(path: Path, identity: dict[str, Any]) -> dict | None:
    """The checkpoint to resume from, None to start fresh, or a UserError if it conflicts.

    A finished run is never resumed. An unfinished one must match `identity`, except that a run
    stopped by a non-finite loss may retry with other `RETRY_KEYS` (a lower learning rate).
    """
    if not path.is_file():
        return None
    ckpt = load_torch(path, "checkpoint; delete it to start over")
    if ckpt.get("finished"):
        log.info("%s holds a finished run: starting a new one", path)
        return None
    old = ckpt.get("identity", {})
    changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
    what = ", ".join(f"{k}: {old.get(k)!r} → {identity.get(k)!r}" for k in changed)
    if changed and ckpt.get("diverged_at") and set(changed) <= RETRY_KEYS:
        log.warning("retrying the diverged run from step %d with %s", ckpt["step"], what)
        return ckpt | {"identity": identity}
    if changed:
        arch = [k for k in changed if k.startswith(("arch.", "disc.")) or k == "image_size"]
        why = ""
        if arch:
            why = f"the networks differ ({', '.join(arch)}), so its weights cannot be loaded. "
        raise UserError(
            f"{path} holds an unfinished run (step {ckpt['step']}/{ckpt['total_steps']}) made "
            f"with different parameters ({what}). {why}To resume it, restore those parameters; "
            f"to start over, delete it: rm {path}"
        )
    return ckpt


def mark_diverged(path: Path, step: int, identity: dict[str, Any]) -> int | None:
    """Flag this run's last good checkpoint so that a retry may change the learning rates.

    Returns its step, or None when this run has written none yet (the file, if any, belongs to
    another run: a finished one, or one with other parameters; it is left as it is).
    """
    if not path.is_file():
        return None
    ckpt = load_torch(path, "checkpoint")
    if ckpt.get("finished") or ckpt.get("identity") != identity:
        return None
    save_torch(path, ckpt | {"diverged_at": step})
    return int(ckpt["step"])


# --------------------------------------------------------------------------- the generator file


def write_generator(path: Path, model: FaceModel, recipe: Recipe) -> None:
    """Write the generator file (`model` must hold plain BatchNorm: `dist.to_plain_batchnorm`)."""
    save_torch(
        path,
        {
            "format": GENERATOR_FORMAT,
            "version": GENERATOR_VERSION,
            "arch": model.arch.model_dump(),
            "image_size": model.image_size,
            "recipe": recipe.model_dump(),
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
    )


def write_discriminator(path: Path, model: MultiscaleDiscriminator) -> None:
    save_torch(
        path,
        {
            "format": DISCRIMINATOR_FORMAT,
            "arch": model.arch.model_dump(),
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
    )


def load_discriminator(path: Path) -> MultiscaleDiscriminator:
    """The trained discriminator beside a generator file (train writes both)."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro train` (it writes the discriminator)")
    state = load_torch(path, "discriminator file")
    if not isinstance(state, dict) or state.get("format") != DISCRIMINATOR_FORMAT:
        raise UserError(f"{path} is not a spade-anime discriminator file")
    model = MultiscaleDiscriminator(DiscriminatorArch(**state["arch"]))
    model.load_state_dict(state["state_dict"])
    return model


def load_generator(path: Path | str, device: torch.device) -> tuple[FaceModel, Recipe]:
    """Rebuild the exported EMA generator: (model in eval mode, the recipe it was trained on)."""
    path = Path(path)
    missing = f"model file {shown(path)} not found: train one with `dvc repro train`"
    require_regular_file(path, missing, "a model file such as models/generator.pt")
    state = load_torch(path, "model file")
    if not isinstance(state, dict) or state.get("format") != GENERATOR_FORMAT:
        raise UserError(f"{path} is not a spade-anime generator file (models/generator.pt)")
    if state.get("version") != GENERATOR_VERSION:
        raise UserError(
            f"{path} has format version {state.get('version')}; this code reads version "
            f"{GENERATOR_VERSION}: retrain with `dvc repro train`"
        )
    try:
        model = FaceModel(GeneratorArch(**state["arch"]), state["image_size"])
        model.load_state_dict(state["state_dict"])
        recipe = Recipe(**state["recipe"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} does not match its own architecture: {e}") from e
    broken = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if broken:
        raise UserError(
            f"{path} holds non-finite weights ({', '.join(broken[:3])}…): it would draw blank "
            "faces; retrain it (`dvc repro train`) or restore a good one (`dvc checkout train`)"
        )
    return model.to(device).eval().requires_grad_(False), recipe
