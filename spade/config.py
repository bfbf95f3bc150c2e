"""Typed parameters: one pydantic model per `params.yaml` section and per nested concept.

The defaults are the seed's setup, `presets/full.yaml` (which writes every one of them out; a
test holds them equal); `params.yaml`, the demo, sets its own values for a CPU.

`load_params()` validates the whole file at once (every stage calls it, so a bad value anywhere
stops the first stage before it does any work). Unknown sections and keys, wrong types and
out-of-range values fail with one line that names the key, the value and what is legal, e.g.
`params.yaml: sample.image_size = 100 is not legal; expected an integer >= 32, <= 512, a power of
two`. Models also validate when code builds them directly (`TrainConfig(batch_size=0)` raises).
`Params` checks sections against each other: a student no wider than its teacher, and networks
whose training fits on one GPU (their parameters counted here, in plain Python, never built).

Keys are grouped by what they change. Every key of a stage's section can change a data, model or
metrics output, so a stage depends on whole sections; the keys that only change speed or logging
live in the `run` section (`RunConfig`, one subsection per stage), on which no stage depends:
changing them reruns nothing (`tests/test_stage_deps.py` holds `dvc.yaml` to exactly that).
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import annotated_types as at
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
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
# A Dask scheduler's address as `dask scheduler` prints it (tcp://10.0.0.5:8786), or host:port.
_ADDRESS = re.compile(r"((tcp|tls|ucx|ws|wss)://)?[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
SCHEDULER = Rule(
    "'' (this machine) or a scheduler address such as tcp://10.0.0.5:8786",
    lambda v: v == "" or _ADDRESS.fullmatch(v) is not None,
)
MAX_PROCESSES = 1024  # per machine, far beyond any machine's GPU count
POWER_OF_TWO = Rule("a power of two", lambda v: v > 0 and v & (v - 1) == 0)
# Sizes beyond any that can run (the model's memory is checked as a whole too: `Params`).
MAX_WIDTH = 4096  # channels of a layer (spade_hidden, z_dim)
MAX_BASE_WIDTH = 1024  # ngf and nef: the layers built on them are up to 16× (8×) wider
MAX_DISC_WIDTH = 512  # the discriminator's layers are capped at 512 channels anyway
MAX_BATCH = 4096  # images in one batch
MAX_IMAGES = 1_000_000  # images in a data set
MAX_WORKERS = 256  # data-loading processes

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

    def flat(self) -> dict[str, Any]:
        """Every key (dotted, nested ones flattened) with its value, in JSON form."""
        return flatten(self.model_dump())


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

    count: Integer = Field(16, ge=1, le=MAX_IMAGES)  # the full preset samples real faces instead
    size: Integer = Field(128, ge=32, le=512)
    seed: Seed = 0


class SampleConfig(Section):
    """`sample`: a deterministic train/test sample of a folder or .zip of images."""

    source: Text = Field("data/anime-faces", min_length=1)
    n_images: Integer = Field(20000, ge=2, le=MAX_IMAGES)
    test_fraction: Number = Field(0.1, gt=0.0, le=0.5)
    image_size: Annotated[Integer, POWER_OF_TWO] = Field(256, ge=32, le=512)
    seed: Seed = 0

    @property
    def n_test(self) -> int:
        return round(self.n_images * self.test_fraction)

    @model_validator(mode="after")
    def _test_split_fits(self) -> SampleConfig:
        if not 1 <= self.n_test < self.n_images:
            raise ValueError(
                f"sample.test_fraction = {self.test_fraction} with sample.n_images"
                f" = {self.n_images} gives {self.n_test} test images; need 1 <= n_test < n_images"
            )
        return self


class Recipe(Section):
    """`roughen`: RGB2HSV → medianBlur → pyrMeanShiftFiltering → medianBlur → HSV2RGB.

    Saved in the model file, so `spade generate --roughen` roughens exactly as training did.
    """

    median_before: Annotated[Integer, ODD] = Field(9, ge=1, le=255)
    spatial_radius: Number = Field(52.0, gt=0.0, le=1000.0)
    color_radius: Number = Field(52.0, gt=0.0, le=1000.0)
    max_level: Integer = Field(1, ge=0, le=8)
    median_after: Annotated[Integer, ODD] = Field(15, ge=1, le=255)


class GeneratorArch(Section):
    """`train.arch`: the generator's architecture, saved in the model file to rebuild it."""

    ngf: Integer = Field(64, ge=1, le=MAX_BASE_WIDTH)
    spade_hidden: Integer = Field(128, ge=1, le=MAX_WIDTH)
    z_dim: Integer = Field(256, ge=1, le=MAX_WIDTH)
    z_every_layer: Flag = True  # z also scales and shifts every SPADE layer (style variety)
    noise: Flag = True
    use_vae: Flag = True  # the style encoder: a face's style as z
    nef: Integer = Field(64, ge=1, le=MAX_BASE_WIDTH)
    # the coarsest resolution (px) z reaches: 4 is every layer and the start; 16 leaves the
    # layers below 16 px (and a learned constant start) to the rough, so that the style is
    # decided where a face's regions are apart (region styles, docs/training.md)
    style_from: Integer = Field(4, ge=4, le=512)

    @model_validator(mode="after")
    def _style_reaches_a_layer(self) -> GeneratorArch:
        if self.style_from & (self.style_from - 1):
            raise ValueError(
                f"style_from must be a power of two (4, 8, 16…), got {self.style_from}"
            )
        if self.style_from > START_SIZE and not self.z_every_layer:
            raise ValueError("style_from above 4 needs z_every_layer: z would reach no layer")
        return self

    def styled(self, resolution: int) -> bool:
        """Whether z modulates the SPADE layers of the block at `resolution` px."""
        return self.z_every_layer and resolution >= self.style_from


class DiscriminatorArch(Section):
    """`train.disc`: `num_d` PatchGANs of `n_layers` layers at full, ½, ¼… resolution."""

    ndf: Integer = Field(64, ge=1, le=MAX_DISC_WIDTH)
    num_d: Integer = Field(2, ge=1, le=4)
    n_layers: Integer = Field(4, ge=1, le=6)


# --------------------------------------------------------------------------- model size
# In plain Python, so that checking the parameters never builds (or allocates) a network;
# `spade.networks` builds exactly these widths, and tests/test_networks.py holds the parameter
# counts equal to its modules'.

START_SIZE = 4
MAX_MULT = 16  # widest layer = ngf * MAX_MULT, at the 4×4 start
# One process holds a whole model: the memory of the largest single GPU (NVIDIA B200, 192 GB).
MAX_DEVICE_BYTES = 192 * 10**9
# Bytes per parameter while training: fp32 weights, gradients and Adam's two moments; a
# generator also has its EMA copy; a frozen teacher only its weights.
TRAINED_BYTES, EMA_BYTES, FROZEN_BYTES = 16, 4, 4


def num_upsamplings(image_size: int) -> int:
    n = math.log2(image_size / START_SIZE)
    if image_size < 32 or not n.is_integer():
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    return int(n)


def generator_channels(arch: GeneratorArch, image_size: int) -> list[int]:
    """Output width of each residual block, one per resolution 4, 8, …, image_size."""
    resolutions = [START_SIZE * 2**i for i in range(num_upsamplings(image_size) + 1)]
    return [arch.ngf * min(MAX_MULT, image_size // r) for r in resolutions]


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _spade(channels: int, arch: GeneratorArch, styled: bool) -> int:
    style = _conv(arch.z_dim, 2 * channels, 1) if styled else 0  # a Linear
    return _conv(3, arch.spade_hidden, 3) + _conv(arch.spade_hidden, 2 * channels, 3) + style


def generator_parameters(arch: GeneratorArch, image_size: int) -> int:
    """Parameters of `FaceModel(arch, image_size)`: the generator and its style encoder."""
    widths = generator_channels(arch, image_size)
    start = widths[0] * START_SIZE**2  # fc(z), or a learned constant when z starts later
    n = _conv(arch.z_dim, start, 1) if arch.style_from <= START_SIZE else start
    n += _conv(widths[-1], 3, 3)
    for i, (fin, fout) in enumerate(zip([widths[0], *widths[:-1]], widths, strict=True)):
        fmid, st = min(fin, fout), arch.styled(START_SIZE * 2**i)
        n += _spade(fin, arch, st) + _conv(fin, fmid, 3) + _spade(fmid, arch, st)
        n += _conv(fmid, fout, 3) + int(arch.noise)
        if fin != fout:  # the learned shortcut
            n += _spade(fin, arch, st) + _conv(fin, fout, 1, bias=False)
    if arch.z_every_layer:
        n += 2 * _conv(arch.z_dim, arch.z_dim, 1)  # the mapping network
    if arch.use_vae:
        widths = [3] + [arch.nef * min(8, 2**i) for i in range(num_upsamplings(image_size))]
        n += sum(_conv(cin, cout, 3) for cin, cout in itertools.pairwise(widths))
        n += 2 * _conv(2 * widths[-1], arch.z_dim, 1)  # μ and log σ² from mean ⊕ max
    return n


def discriminator_parameters(arch: DiscriminatorArch) -> int:
    """Parameters of `MultiscaleDiscriminator(arch)` (on image ⊕ rough: 6 channels)."""
    widths = [6, arch.ndf]
    for _ in range(1, arch.n_layers):
        widths.append(min(2 * widths[-1], MAX_DISC_WIDTH))
    per_scale = sum(_conv(cin, cout, 4) for cin, cout in itertools.pairwise([*widths, 1]))
    return arch.num_d * per_scale


class LoopConfig(Section):
    """What every training run has (the GAN's `train`, the student's `distill`): the losses both
    use, optimisation, the loop and the hardware. `SECTION` names it in messages."""

    SECTION: ClassVar[str] = "train"

    # losses
    lambda_gan: Number = Field(1.0, ge=0.0)
    lambda_fm: Number = Field(10.0, ge=0.0)
    lambda_l1: Number = Field(100.0, ge=0.0)
    # weight of the real face's one-pixel texture in the L1 loss (spade.losses.texture_weight):
    # highlights, strands and screentone are a few pixels each, and the style lives in them
    l1_texture: Number = Field(0.0, ge=0.0)
    lambda_vgg: Number = Field(10.0, ge=0.0)
    # regional style mixing: the share of faces whose random half of the rough's regions is
    # painted with a second style code (spade.regions.random_region_masks): with the style
    # encoder, the code of those regions of the real face (FaceModel.forward), else a random one
    region_mix: Number = Field(0.5, ge=0.0, le=1.0)
    # optimisation
    lr_g: Number = Field(1e-4, gt=0.0)
    lr_d: Number = Field(4e-4, gt=0.0)
    betas: tuple[Beta, Beta] = (0.0, 0.9)
    decay_epochs: Integer = Field(0, ge=0)
    ema_decay: Number = Field(0.999, ge=0.0, le=1.0)
    batch_size: Integer = Field(4, ge=1, le=MAX_BATCH)  # the global batch, over `nproc` processes
    epochs: Integer = Field(37, ge=1)
    seed: Seed = 0
    flip: Flag = True
    bn_batches: Integer = Field(50, ge=0)  # batches to re-estimate BatchNorm before export
    # hardware: each can change the numbers (bf16, memory layout, BatchNorm per process)
    amp: Flag = True
    channels_last: Flag = True
    compile: Flag = False  # torch.compile the networks (CUDA)
    nproc: Integer = Field(1, ge=1, le=MAX_PROCESSES)  # processes (GPUs) per machine
    nnodes: Integer = Field(1, ge=1, le=MAX_PROCESSES)  # machines (SPADE_RDZV_ENDPOINT joins them)

    @model_validator(mode="after")
    def _loop_fields_agree(self) -> LoopConfig:
        name = self.SECTION
        if self.decay_epochs > self.epochs:
            raise ValueError(
                f"{name}.decay_epochs = {self.decay_epochs} exceeds {name}.epochs"
                f" = {self.epochs}; legal values are 0..epochs"
            )
        if self.batch_size % self.world_size:
            n = self.world_size
            legal = [b for b in range(n, 4 * n + 1, n)]
            processes = f"{name}.nproc = {self.nproc}" + (
                f" on {name}.nnodes = {self.nnodes} machines" if self.nnodes > 1 else ""
            )
            raise ValueError(
                f"{name}.batch_size = {self.batch_size} is not legal with {processes}; it is the"
                f" global batch, split evenly over the processes: use a multiple of {n} "
                f"({', '.join(map(str, legal))}, …)"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def batch_per_process(self) -> int:
        return self.batch_size // self.world_size


class TrainConfig(LoopConfig):
    """`train`: the GAN — its networks and the losses only it has, then the loop."""

    arch: GeneratorArch = GeneratorArch()
    disc: DiscriminatorArch = DiscriminatorArch()
    lambda_kl: Number = Field(0.01, ge=0.0)
    lambda_ms: Number = Field(0.0, ge=0.0)  # mode seeking: rewards faces that differ with z

    @model_validator(mode="after")
    def _fields_agree(self) -> TrainConfig:
        if self.arch.use_vae and self.lambda_kl == 0:
            raise ValueError("train.arch.use_vae needs train.lambda_kl > 0")
        if self.arch.use_vae and self.lambda_ms > 0:
            raise ValueError(
                "train.lambda_ms > 0 compares faces from two random z, but with "
                "train.arch.use_vae z comes from the real face; use one or the other"
            )
        return self


class StudentArch(Section):
    """`distill.arch`: the student's widths; the rest of its architecture is the teacher's."""

    ngf: Integer = Field(16, ge=1, le=MAX_BASE_WIDTH)
    spade_hidden: Integer = Field(32, ge=1, le=MAX_WIDTH)


class DistillConfig(LoopConfig):
    """`distill`: a narrower student trained to paint like the frozen teacher (GAN Compression):
    its block outputs matched to the teacher's through learnable 1×1 convolutions (`lambda_feat`,
    MSE), its face to the teacher's (`lambda_teacher`, L1) and to the real one (`lambda_l1`),
    with the GAN and feature-matching losses against a discriminator started from the teacher's.
    """

    SECTION: ClassVar[str] = "distill"

    arch: StudentArch = StudentArch()
    lambda_feat: Number = Field(10.0, ge=0.0)
    lambda_teacher: Number = Field(100.0, ge=0.0)
    lr_g: Number = Field(2e-4, gt=0.0)


class FeaturesConfig(Section):
    """`features`: Inception features of the real test images (the FID reference), and the style
    probe fitted on the real training faces when the data has style labels."""

    batch_size: Integer = Field(64, ge=1, le=MAX_BATCH)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: Seed = 0  # the style probe's initial weights and batches


class EvaluateConfig(Section):
    """`evaluate`: generate the test faces, then FID, KID and paired metrics."""

    seed: Seed = 0
    batch_size: Integer = Field(32, ge=1, le=MAX_BATCH)
    kid_subsets: Integer = Field(100, ge=1, le=100_000)
    kid_subset_size: Integer = Field(1000, ge=2, le=MAX_IMAGES)
    grid_rows: Integer = Field(8, ge=1, le=64)
    diversity_k: Integer = Field(5, ge=2, le=16)  # faces per test rough for `diversity`


class CpuConfig(Section):
    """`cpu`: the numerics of CPU work in train, distill, features and evaluate
    (`spade.numerics`)."""

    reproducible: Flag = True  # the same bytes on every Intel CPU with AVX2; else the fastest
    threads: Integer = Field(2, ge=1, le=256)  # torch threads (the results depend on them)


# --------------------------------------------------------------------------- speed and logging


class DemoRun(Section):
    """`run.demo`: how fast the demo faces are drawn (a face's bytes depend on its seed alone)."""

    n_jobs: Jobs = -1  # processes drawing faces


class RoughenRun(Section):
    """`run.roughen`: where and how fast the recipe runs; every engine gives the same bytes
    (tests/test_roughen_torch.py, tests/test_roughen.py)."""

    backend: Literal["auto", "opencv", "torch"] = "auto"  # auto: torch with CUDA, else opencv
    n_jobs: Jobs = -1
    batch_size: Integer = Field(16, ge=1, le=MAX_BATCH)  # a worker's task, or one device batch
    scheduler: Annotated[Text, SCHEDULER] = ""  # a Dask scheduler address; "" = this machine


class LoopRun(Section):
    """`run.train`, `run.distill`: data-loading processes, logging and checkpoint intervals. The
    model is the same bytes whatever they are (tests/test_train.py)."""

    num_workers: Integer = Field(4, ge=0, le=MAX_WORKERS)  # data-loading processes
    log_every: Integer = Field(100, ge=1)  # steps between logged losses
    ckpt_every: Integer = Field(2000, ge=1)  # steps between resumable checkpoints
    n_samples: Integer = Field(8, ge=1, le=64)  # test faces in each epoch's logged grid


class RunConfig(Section):
    """`run`: the keys that change only speed and logging, one subsection per stage. No output
    depends on them, so no stage depends on this section."""

    demo: DemoRun = DemoRun()
    roughen: RoughenRun = RoughenRun()
    train: LoopRun = LoopRun()
    distill: LoopRun = LoopRun()


class Params(Section):
    """The whole `params.yaml`: one section per stage and `run`; a missing section takes its
    defaults."""

    demo: DemoConfig = DemoConfig()
    sample: SampleConfig = SampleConfig()
    roughen: Recipe = Recipe()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    features: FeaturesConfig = FeaturesConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    cpu: CpuConfig = CpuConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _sections_agree(self) -> Params:
        teacher, student = self.train.arch, self.distill.arch
        for key in ("ngf", "spade_hidden"):
            if getattr(student, key) > getattr(teacher, key):
                raise ValueError(
                    f"distill.arch.{key} = {getattr(student, key)} is wider than the teacher's "
                    f"train.arch.{key} = {getattr(teacher, key)}: a student is narrower"
                )
        self._check_memory()
        return self

    def _check_memory(self) -> None:
        """Refuse networks whose training cannot fit on one GPU: their weights and optimiser
        state alone, counted without building them (activations come on top)."""
        size, teacher = self.sample.image_size, self.train.arch
        student = teacher.model_copy(update=self.distill.arch.model_dump())
        g, s = generator_parameters(teacher, size), generator_parameters(student, size)
        d = discriminator_parameters(self.train.disc) * TRAINED_BYTES
        trained = TRAINED_BYTES + EMA_BYTES
        needs = {  # the stage: its bytes, the sections whose widths count
            "train": (g * trained + d, ["train"]),
            "distill": (g * FROZEN_BYTES + s * trained + d, ["train", "distill"]),
        }
        for section, (need, sections) in needs.items():
            if need > MAX_DEVICE_BYTES:
                widths = ", ".join(
                    f"{name}.arch.{k} = {v}"
                    for name in sections
                    for k, v in getattr(self, name).arch.model_dump().items()
                    if type(v) is int and k != "style_from"  # widths only
                )
                raise ValueError(
                    f"{widths}: the {section} stage's networks at sample.image_size = {size} "
                    f"need at least {need / 1e9:,.0f} GB to train (weights, gradients, Adam, "
                    f"EMA), more than one GPU holds ({MAX_DEVICE_BYTES / 1e9:.0f} GB); use "
                    "narrower networks"
                )


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
        raise UserError(f"{source} must be a mapping of stage sections, got {short_repr(data)}")
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{source}: {explain(Params, e.errors()[0])}") from None


def short_repr(value: Any) -> str:
    """A value as a message shows it: bounded, however big (a YAML alias bomb stays short)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    short.maxlist, short.maxdict, short.maxlevel = 6, 4, 2
    return short.repr(value)


def explain(model: type[BaseModel], error: Any) -> str:
    """One line for a pydantic error: the dotted key, the bad value and what is legal."""
    loc = error["loc"]
    if error["type"] == "invalid_key" or not all(isinstance(p, str | int) for p in loc):
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"the key {short_repr(error['input'])} in {where} is not a name; keys are words"
    if error["type"] == "value_error" and _is_section(model, loc):  # a rule between fields
        return str(error["ctx"]["error"])
    *parents, leaf = loc
    owner = _model_at(model, tuple(parents))
    where = ".".join(str(p) for p in parents)
    if error["type"] == "extra_forbidden":
        if not parents:
            return (
                f"unknown section '{leaf}'; legal sections: {', '.join(sorted(owner.model_fields))}"
            )
        legal = ", ".join(sorted(owner.model_fields))
        return f"unknown key {where}.{leaf}; legal keys in '{where}': {legal}{_run_hint(loc)}"
    if isinstance(leaf, int) and error["type"] == "missing":  # a tuple that is too short
        *parents, leaf = parents
        owner, where = _model_at(model, tuple(parents)), ".".join(str(p) for p in parents)
    elif isinstance(leaf, int):  # an element of a tuple field, e.g. train.betas[1]
        field = _model_at(model, tuple(parents[:-1])).model_fields[parents[-1]]
        hint = typing.get_args(field.annotation)[leaf]
        value, legal = short_repr(error["input"]), describe(hint, [])
        return f"{where}[{leaf}] = {value} is not legal; expected {legal}"
    field = owner.model_fields[leaf]
    key = f"{where}.{leaf}" if where else str(leaf)
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        return f"section '{key}' must be a mapping, got {short_repr(error['input'])}"
    legal = describe(field.annotation, field.metadata)
    return f"{key} = {short_repr(error['input'])} is not legal; expected {legal}"


def _run_hint(loc: tuple[Any, ...]) -> str:
    """Where a speed or logging key lives, for a file that writes it in its stage's section."""
    if len(loc) != 2:
        return ""
    section, key = loc
    run = RunConfig.model_fields.get(section)
    if run is None or key not in run.annotation.model_fields:
        return ""
    return f" (speed and logging keys are in the run section: run.{section}.{key})"


def _is_section(model: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    for name in loc:
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return False
        model = field.annotation
    return True


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
