"""Typed, validated configs: one frozen dataclass per stage, built from its `params.yaml` section.

Every field declares its legal values in `field(metadata=...)`; `parse_section` rejects unknown
keys, wrong types and out-of-range values before any work starts, naming the key and what is
legal. Stages call `load_section("train", TrainConfig)`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from spade.errors import UserError

T = TypeVar("T")


def _meta(
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    odd: bool = False,
    pow2: bool = False,
    doc: str = "",
) -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "odd": odd, "pow2": pow2, "doc": doc}


def opt(default: Any, **constraints: Any) -> Any:
    """A dataclass field with a default and its legal range (see `_meta`)."""
    return field(default=default, metadata=_meta(**constraints))


def _legal(f: dataclasses.Field, hint: Any) -> str:
    """Human-readable description of a field's legal values."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    m = f.metadata or _meta()
    parts = [_type_name(hint)]
    if m["lo"] is not None:
        parts.append(f"{'>' if m['lo_open'] else '>='} {m['lo']}")
    if m["hi"] is not None:
        parts.append(f"<= {m['hi']}")
    if m["odd"]:
        parts.append("odd")
    if m["pow2"]:
        parts.append("a power of two")
    return " ".join(parts[:1]) + (" " + ", ".join(parts[1:]) if len(parts) > 1 else "")


def _type_name(hint: Any) -> str:
    if _is_optional(hint):
        return _type_name(_strip_optional(hint)) + " or null"
    if typing.get_origin(hint) is tuple:
        return "list of " + " ".join(_type_name(a) for a in typing.get_args(hint)[:1])
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        hint, str(hint)
    )


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _strip_optional(hint: Any) -> Any:
    (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return inner


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Return (ok, value converted to the field's type)."""
    if _is_optional(hint):
        return (True, None) if value is None else _coerce(value, _strip_optional(hint))
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint), value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            return False, value
        converted = [_coerce(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok and math.isfinite(value), float(value) if ok else value
    if hint is str:
        return isinstance(value, str) and value != "", value
    raise TypeError(f"unsupported config type {hint}")


def _in_range(value: Any, m: dict[str, Any]) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    if m["lo"] is not None and (value <= m["lo"] if m["lo_open"] else value < m["lo"]):
        return False
    if m["hi"] is not None and value > m["hi"]:
        return False
    if m["odd"] and value % 2 != 1:
        return False
    return not (m["pow2"] and (value < 1 or value & (value - 1)))


def parse_section(section: str, raw: Any, cls: type[T]) -> T:
    """Build `cls` from one params.yaml section, failing fast with the key and its legal values."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: section '{section}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(
            f"params.yaml: unknown key {section}.{unknown[0]}; "
            f"legal keys in '{section}': {', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in raw.items():
        f = fields[name]
        ok, converted = _coerce(value, hints[name])
        if not ok or not _in_range(converted, f.metadata or _meta()):
            raise UserError(
                f"params.yaml: {section}.{name} = {value!r} is not legal; "
                f"expected {_legal(f, hints[name])}"
            )
        values[name] = converted
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run from the repository root")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a mapping of stage sections")
    return data


def load_section(section: str, cls: type[T], path: Path | str = "params.yaml") -> T:
    return parse_section(section, load_params(path).get(section), cls)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON form of a config (tuples become lists), for checkpoints and metrics files."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------- stage configs


@dataclass(frozen=True)
class DemoConfig:
    """`demo`: the procedurally drawn default dataset."""

    count: int = opt(1200, lo=1, hi=1_000_000)
    size: int = opt(128, lo=32, hi=512)
    seed: int = opt(0, lo=0)


@dataclass(frozen=True)
class SampleConfig:
    """`sample`: draw a deterministic train/test sample from a folder or .zip of images."""

    source: str = "data/demo/faces.zip"
    n_images: int = opt(1200, lo=2)
    test_fraction: float = opt(0.1, lo=0.0, hi=0.5, lo_open=True)
    image_size: int = opt(64, lo=32, hi=512, pow2=True)
    seed: int = opt(0, lo=0)

    def check(self) -> None:
        n_test = self.n_test
        if n_test < 1 or n_test >= self.n_images:
            raise UserError(
                f"params.yaml: sample.test_fraction = {self.test_fraction} with sample.n_images"
                f" = {self.n_images} gives {n_test} test images; need 1 <= n_test < n_images"
            )

    @property
    def n_test(self) -> int:
        return round(self.n_images * self.test_fraction)


@dataclass(frozen=True)
class RoughenConfig:
    """`roughen`: the seed recipe (see `spade.roughen`); every number is a parameter."""

    median_before: int = opt(9, lo=1, hi=255, odd=True)
    spatial_radius: float = opt(52.0, lo=0.0, hi=1000.0, lo_open=True)
    color_radius: float = opt(52.0, lo=0.0, hi=1000.0, lo_open=True)
    max_level: int = opt(1, lo=0, hi=8)
    median_after: int = opt(15, lo=1, hi=255, odd=True)
    n_jobs: int = opt(-1, lo=-1)
    batch_size: int = opt(32, lo=1)

    def check(self) -> None:
        if self.n_jobs == 0:
            raise UserError(
                "params.yaml: roughen.n_jobs = 0 is not legal; use -1 (all cores) or >= 1"
            )


@dataclass(frozen=True)
class TrainConfig:
    """`train`: SPADE generator, multi-scale PatchGAN discriminator, losses and the loop."""

    # architecture (changing any of these makes an old checkpoint incompatible)
    ngf: int = opt(64, lo=1)
    spade_hidden: int = opt(128, lo=1)
    z_dim: int = opt(256, lo=1)
    noise: bool = True
    use_vae: bool = False
    nef: int = opt(64, lo=1)
    ndf: int = opt(64, lo=1)
    num_d: int = opt(2, lo=1, hi=4)
    n_layers_d: int = opt(4, lo=1, hi=6)
    # losses
    lambda_gan: float = opt(1.0, lo=0.0)
    lambda_fm: float = opt(10.0, lo=0.0)
    lambda_l1: float = opt(100.0, lo=0.0)
    lambda_vgg: float = opt(10.0, lo=0.0)
    lambda_kl: float = opt(0.05, lo=0.0)
    # optimisation
    lr_g: float = opt(1e-4, lo=0.0, lo_open=True)
    lr_d: float = opt(4e-4, lo=0.0, lo_open=True)
    betas: tuple[float, float] = (0.0, 0.9)
    decay_epochs: int = opt(0, lo=0)
    ema_decay: float = opt(0.999, lo=0.0, hi=1.0)
    batch_size: int = opt(4, lo=1)
    epochs: int = opt(37, lo=1)
    seed: int = opt(0, lo=0)
    flip: bool = True
    # hardware
    amp: bool = True
    channels_last: bool = True
    nproc: int = opt(1, lo=1)
    # bookkeeping: does not change the numbers a run produces; may change when resuming
    num_workers: int = opt(2, lo=0)
    log_every: int = opt(50, lo=1)
    ckpt_every: int = opt(1000, lo=1)
    bn_batches: int = opt(20, lo=0)
    n_samples: int = opt(8, lo=1, hi=64)

    def check(self) -> None:
        for i, b in enumerate(self.betas):
            if not 0.0 <= b < 1.0:
                raise UserError(
                    f"params.yaml: train.betas[{i}] = {b} is not legal; need 0 <= b < 1"
                )
        if self.decay_epochs > self.epochs:
            raise UserError(
                f"params.yaml: train.decay_epochs = {self.decay_epochs} exceeds train.epochs"
                f" = {self.epochs}; legal values are 0..epochs"
            )
        if self.use_vae and self.lambda_kl == 0:
            raise UserError("params.yaml: train.use_vae needs train.lambda_kl > 0")


# Keys that neither change the networks nor the numbers a run produces.
TRAIN_BOOKKEEPING_KEYS = frozenset(
    {"num_workers", "log_every", "ckpt_every", "bn_batches", "n_samples"}
)
TRAIN_ARCH_KEYS = frozenset(
    {"ngf", "spade_hidden", "z_dim", "noise", "use_vae", "nef", "ndf", "num_d", "n_layers_d"}
)


@dataclass(frozen=True)
class FeaturesConfig:
    """`features`: Inception features of the real test images (the FID reference)."""

    batch_size: int = opt(32, lo=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class EvaluateConfig:
    """`evaluate`: generate the test faces, then FID, KID and paired metrics."""

    seed: int = opt(0, lo=0)
    batch_size: int = opt(32, lo=1)
    kid_subsets: int = opt(100, lo=1)
    kid_subset_size: int = opt(1000, lo=2)
    grid_rows: int = opt(8, lo=1, hi=64)
