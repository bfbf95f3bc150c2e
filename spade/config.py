"""Typed parameters: one pydantic model per `params.yaml` section and per nested concept.

`load_params()` validates the whole file at once (every stage calls it, so a bad value anywhere
stops the first stage before it does any work). Unknown sections and keys, wrong types and
out-of-range values fail with one line that names the key, the value and what is legal, e.g.
`params.yaml: sample.image_size = 100 is not legal; expected an integer >= 32, <= 512, a power of
two`. Models also validate when code builds them directly (`TrainConfig(batch_size=0)` raises).

`SPEED_KEYS` of a section lists the keys that only change speed or logging: every other key can
change a data, model or metrics output, and is therefore a dependency of the stages that read it
(`tests/test_stage_deps.py` holds `dvc.yaml` to exactly that).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import annotated_types as at
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic_core import core_schema

from spade.errors import UserError

# --------------------------------------------------------------------------- value types

# YAML 1.1 (PyYAML) reads `1e-4` as a string; YAML 1.2 and DVC's `-S` read it as a number.
_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _number(value: Any) -> Any:
    """Accept ints, floats and numbers written as strings (`1e-4`); refuse bools."""
    if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return float(value)


@dataclass(frozen=True)
class Rule:
    """A named constraint beyond ranges (shown in messages as `text`)."""

    text: str
    holds: Callable[[Any], bool]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            if not self.holds(value):
                raise ValueError(f"not {self.text}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))


ODD = Rule("odd", lambda v: v % 2 == 1)
ALL_CORES_OR_COUNT = Rule("-1 (all cores) or >= 1", lambda v: v == -1 or v >= 1)
POWER_OF_TWO = Rule("a power of two", lambda v: v > 0 and v & (v - 1) == 0)

Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Integer = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
# Seeds feed numpy, torch, DistributedSampler (seed + epoch) and per-rank offsets: 31 bits
# leave room for all of them on every platform.
MAX_SEED = 2**31 - 1
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
Jobs = Annotated[int, Strict(), ALL_CORES_OR_COUNT]  # worker processes
Beta = Annotated[float, BeforeValidator(_number), Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    """Base of every params model: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    SPEED_KEYS: ClassVar[frozenset[str]] = frozenset()

    def output_params(self) -> dict[str, Any]:
        """The keys (dotted, nested ones flattened) that can change an output, with values."""
        return {
            k: v
            for k, v in flatten(self.model_dump()).items()
            if k.split(".")[0] not in self.SPEED_KEYS
        }


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'arch': {'ngf': 4}} → {'arch.ngf': 4}; tuples become lists (JSON form)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


# --------------------------------------------------------------------------- sections


class DemoConfig(Section):
    """`demo`: the procedurally drawn default dataset (`spade.synthetic`)."""

    SPEED_KEYS: ClassVar[frozenset[str]] = frozenset({"n_jobs"})

    count: Integer = Field(1200, ge=1, le=1_000_000)
    size: Integer = Field(128, ge=32, le=512)
    seed: Seed = 0
    n_jobs: Jobs = 1  # processes drawing faces


class SampleConfig(Section):
    """`sample`: a deterministic train/test sample of a folder or .zip of images."""

    source: Text = Field("data/demo/faces.zip", min_length=1)
    n_images: Integer = Field(1200, ge=2)
    test_fraction: Number = Field(0.1, gt=0.0, le=0.5)
    image_size: Annotated[Integer, POWER_OF_TWO] = Field(64, ge=32, le=512)
    seed: Seed = 0

    @property
    def n_test(self) -> int:
        return round(self.n_images * self.test_fraction)

    def model_post_init(self, _context: Any) -> None:
        if not 1 <= self.n_test < self.n_images:
            raise UserError(
                f"params.yaml: sample.test_fraction = {self.test_fraction} with sample.n_images"
                f" = {self.n_images} gives {self.n_test} test images; need 1 <= n_test < n_images"
            )


class Recipe(Section):
    """`roughen.recipe`: RGB2HSV → medianBlur → pyrMeanShiftFiltering → medianBlur → HSV2RGB.

    Saved in the model file, so `spade generate --roughen` roughens exactly as training did.
    """

    median_before: Annotated[Integer, ODD] = Field(9, ge=1, le=255)
    spatial_radius: Number = Field(52.0, gt=0.0, le=1000.0)
    color_radius: Number = Field(52.0, gt=0.0, le=1000.0)
    max_level: Integer = Field(1, ge=0, le=8)
    median_after: Annotated[Integer, ODD] = Field(15, ge=1, le=255)


class RoughenConfig(Section):
    """`roughen`: the recipe (a dependency) and how fast to run it (not dependencies)."""

    SPEED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"backend", "n_jobs", "batch_size", "scheduler"}
    )

    recipe: Recipe = Recipe()
    backend: Literal["auto", "opencv", "torch"] = "auto"  # auto: torch with CUDA, else opencv
    n_jobs: Jobs = -1
    batch_size: Integer = Field(32, ge=1)
    scheduler: Text = ""  # a Dask scheduler address (opencv engine); "" = this machine


class GeneratorArch(Section):
    """`train.arch`: the generator's architecture, saved in the model file to rebuild it."""

    ngf: Integer = Field(64, ge=1)
    spade_hidden: Integer = Field(128, ge=1)
    z_dim: Integer = Field(256, ge=1)
    z_every_layer: Flag = False  # z also scales and shifts every SPADE layer (style variety)
    noise: Flag = True
    use_vae: Flag = False
    nef: Integer = Field(64, ge=1)


class DiscriminatorArch(Section):
    """`train.disc`: `num_d` PatchGANs of `n_layers` layers at full, ½, ¼… resolution."""

    ndf: Integer = Field(64, ge=1)
    num_d: Integer = Field(2, ge=1, le=4)
    n_layers: Integer = Field(4, ge=1, le=6)


class TrainConfig(Section):
    """`train`: networks, losses, optimisation and the loop."""

    SPEED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"num_workers", "log_every", "ckpt_every", "n_samples"}
    )

    arch: GeneratorArch = GeneratorArch()
    disc: DiscriminatorArch = DiscriminatorArch()
    # losses
    lambda_gan: Number = Field(1.0, ge=0.0)
    lambda_fm: Number = Field(10.0, ge=0.0)
    lambda_l1: Number = Field(100.0, ge=0.0)
    lambda_vgg: Number = Field(10.0, ge=0.0)
    lambda_kl: Number = Field(0.05, ge=0.0)
    lambda_ms: Number = Field(0.0, ge=0.0)  # mode seeking: rewards faces that differ with z
    # optimisation
    lr_g: Number = Field(1e-4, gt=0.0)
    lr_d: Number = Field(4e-4, gt=0.0)
    betas: tuple[Beta, Beta] = (0.0, 0.9)
    decay_epochs: Integer = Field(0, ge=0)
    ema_decay: Number = Field(0.999, ge=0.0, le=1.0)
    batch_size: Integer = Field(4, ge=1)  # the global batch, split over `nproc` processes
    epochs: Integer = Field(37, ge=1)
    seed: Seed = 0
    flip: Flag = True
    bn_batches: Integer = Field(20, ge=0)  # batches to re-estimate BatchNorm before export
    # hardware: each can change the numbers (bf16, memory layout, BatchNorm per process)
    amp: Flag = True
    channels_last: Flag = True
    compile: Flag = False  # torch.compile the networks (CUDA)
    nproc: Integer = Field(1, ge=1)
    # speed and logging only
    num_workers: Integer = Field(2, ge=0)
    log_every: Integer = Field(50, ge=1)
    ckpt_every: Integer = Field(1000, ge=1)
    n_samples: Integer = Field(8, ge=1, le=64)

    def model_post_init(self, _context: Any) -> None:
        if self.decay_epochs > self.epochs:
            raise UserError(
                f"params.yaml: train.decay_epochs = {self.decay_epochs} exceeds train.epochs"
                f" = {self.epochs}; legal values are 0..epochs"
            )
        if self.arch.use_vae and self.lambda_kl == 0:
            raise UserError("params.yaml: train.arch.use_vae needs train.lambda_kl > 0")
        if self.arch.use_vae and self.lambda_ms > 0:
            raise UserError(
                "params.yaml: train.lambda_ms > 0 compares faces from two random z, but with "
                "train.arch.use_vae z comes from the real face; use one or the other"
            )
        if self.batch_size % self.nproc:
            legal = [b for b in range(self.nproc, 4 * self.nproc + 1, self.nproc)]
            raise UserError(
                f"params.yaml: train.batch_size = {self.batch_size} is not legal with train.nproc"
                f" = {self.nproc}; it is the global batch, split evenly over the processes: "
                f"use a multiple of {self.nproc} ({', '.join(map(str, legal))}, …)"
            )

    @property
    def batch_per_process(self) -> int:
        return self.batch_size // self.nproc


class FeaturesConfig(Section):
    """`features`: Inception features of the real test images (the FID reference)."""

    batch_size: Integer = Field(32, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class EvaluateConfig(Section):
    """`evaluate`: generate the test faces, then FID, KID and paired metrics."""

    seed: Seed = 0
    batch_size: Integer = Field(32, ge=1)
    kid_subsets: Integer = Field(100, ge=1)
    kid_subset_size: Integer = Field(1000, ge=2)
    grid_rows: Integer = Field(8, ge=1, le=64)
    diversity_k: Integer = Field(5, ge=2, le=16)  # faces per test rough for `diversity`


class Params(Section):
    """The whole `params.yaml`: one section per stage; a missing section takes its defaults."""

    demo: DemoConfig = DemoConfig()
    sample: SampleConfig = SampleConfig()
    roughen: RoughenConfig = RoughenConfig()
    train: TrainConfig = TrainConfig()
    features: FeaturesConfig = FeaturesConfig()
    evaluate: EvaluateConfig = EvaluateConfig()


# --------------------------------------------------------------------------- loading


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate the whole params file (cheap: every stage does it first)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run from the repository root")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {e}") from e
    return parse_params(data, path.name)


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of stage sections, got {data!r}")
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{source}: {explain(Params, e.errors()[0])}") from None


def explain(model: type[BaseModel], error: Any) -> str:
    """One line for a pydantic error: the dotted key, the bad value and what is legal."""
    loc = error["loc"]
    *parents, leaf = loc
    owner = _model_at(model, tuple(parents))
    where = ".".join(str(p) for p in parents)
    if error["type"] == "extra_forbidden":
        if not parents:
            return (
                f"unknown section '{leaf}'; legal sections: {', '.join(sorted(owner.model_fields))}"
            )
        legal = ", ".join(sorted(owner.model_fields))
        return f"unknown key {where}.{leaf}; legal keys in '{where}': {legal}"
    if isinstance(leaf, int) and error["type"] == "missing":  # a tuple that is too short
        *parents, leaf = parents
        owner, where = _model_at(model, tuple(parents)), ".".join(str(p) for p in parents)
    elif isinstance(leaf, int):  # an element of a tuple field, e.g. train.betas[1]
        field = _model_at(model, tuple(parents[:-1])).model_fields[parents[-1]]
        hint = typing.get_args(field.annotation)[leaf]
        return f"{where}[{leaf}] = {error['input']!r} is not legal; expected {describe(hint, [])}"
    field = owner.model_fields[leaf]
    key = f"{where}.{leaf}" if where else str(leaf)
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        return f"section '{key}' must be a mapping, got {error['input']!r}"
    legal = describe(field.annotation, field.metadata)
    return f"{key} = {error['input']!r} is not legal; expected {legal}"


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel]:
    for name in path:
        model = model.model_fields[name].annotation
    return model


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}


def describe(hint: Any, metadata: list[Any]) -> str:
    """Legal values of a field, e.g. 'an integer >= 1, <= 255, odd'."""
    if typing.get_origin(hint) is Annotated:
        base, *extra = typing.get_args(hint)
        return describe(base, [*extra, *metadata])
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return f"a list of {len(args)}: " + ", ".join(describe(a, []) for a in args)
    parts = []
    for m in _constraints(metadata):
        if isinstance(m, at.Ge):
            parts.append(f">= {m.ge}")
        elif isinstance(m, at.Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, at.Le):
            parts.append(f"<= {m.le}")
        elif isinstance(m, at.Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, Rule):
            parts.append(m.text)
    name = _TYPE_NAMES.get(hint, str(hint))
    if any(isinstance(m, at.MinLen) and m.min_length == 1 for m in _constraints(metadata)):
        name = name.replace("a ", "a non-empty ", 1)
    return name + (" " + ", ".join(parts) if parts else "")


def _constraints(metadata: list[Any]) -> list[Any]:
    """Flatten pydantic's FieldInfo objects (from `Field(...)` in Annotated) into constraints."""
    out = []
    for m in metadata:
        inner = getattr(m, "metadata", None)
        out.extend(_constraints(inner) if isinstance(inner, list) else [m])
    return out
