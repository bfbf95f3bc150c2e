"""The two files training writes: the resumable checkpoint and the exported generator.

A checkpoint is a plain dict (state_dicts, step, RNG states and the `identity` of the run: the
parameters that can change the model, and a description of the data), written atomically and
read with `weights_only=True`. The generator file holds the EMA generator's weights, its
architecture (`train.arch`) and image size, and the roughen recipe for `generate --roughen`.
Both are written through memory, so the same content gives the same bytes.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from spade.config import GeneratorArch, Recipe
from spade.errors import UserError
from spade.files import write_bytes
from spade.networks import StyledGenerator

log = logging.getLogger(__name__)

GENERATOR_FORMAT = "spade-anime-generator"
GENERATOR_VERSION = 2
# Keys a diverged run may change when it resumes from its last good checkpoint.
RETRY_KEYS = frozenset({"lr_g", "lr_d", "amp"})


def save_torch(path: Path, obj: Any) -> None:
    """torch.save through memory: the archive's inner names do not depend on a temp name."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def load_torch(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------- checkpoints


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
            f"with different parameters ({what}); {why}To resume it, restore those parameters; "
            f"to start over, delete it: rm {path}"
        )
    return ckpt


def mark_diverged(path: Path, step: int) -> int | None:
    """Flag the last good checkpoint so that a retry may change the learning rates.

    Returns its step, or None when there is no checkpoint yet.
    """
    if not path.is_file():
        return None
    ckpt = load_torch(path, "checkpoint")
    save_torch(path, ckpt | {"diverged_at": step})
    return int(ckpt["step"])


# --------------------------------------------------------------------------- the generator file


def write_generator(path: Path, model: StyledGenerator, recipe: Recipe) -> None:
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


def load_generator(path: Path | str, device: torch.device) -> tuple[StyledGenerator, Recipe]:
    """Rebuild the exported EMA generator: (model in eval mode, the recipe it was trained on)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found: train one with `dvc repro train`")
    state = load_torch(path, "model file")
    if not isinstance(state, dict) or state.get("format") != GENERATOR_FORMAT:
        raise UserError(f"{path} is not a spade-anime generator file (models/generator.pt)")
    if state.get("version") != GENERATOR_VERSION:
        raise UserError(
            f"{path} has format version {state.get('version')}; this code reads version "
            f"{GENERATOR_VERSION}: retrain with `dvc repro train`"
        )
    try:
        model = StyledGenerator(GeneratorArch(**state["arch"]), state["image_size"])
        model.load_state_dict(state["state_dict"])
        recipe = Recipe(**state["recipe"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} does not match its own architecture: {e}") from e
    return model.to(device).eval().requires_grad_(False), recipe
