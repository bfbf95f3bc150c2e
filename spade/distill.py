"""Distillation: a narrower student generator that paints like the frozen teacher.

GAN Compression's recipe (Li et al., CVPR 2020): the teacher (`models/generator.pt`) is frozen;
the student has the teacher's architecture with the widths of `distill.arch`; its tapped block
outputs are mapped to the teacher's widths by learnable 1×1 convolutions and matched (MSE); it
also learns the teacher's face (L1) and the real one, with the GAN and feature-matching losses
against a discriminator that starts from the teacher's (`models/discriminator.pt`).

The student shares the teacher's style encoder and mapping network (copied, frozen), so z means
the same style in both: a seed, or a reference picture, gives the teacher's character in the
student's hand. The student file has the generator file's format: everything that loads a model
loads it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spade.checkpoint import load_discriminator, load_generator
from spade.config import DistillConfig, GeneratorArch, LoopRun
from spade.dist import DistEnv
from spade.errors import UserError
from spade.networks import (
    GLOBAL_RNG,
    FaceModel,
    RandomStream,
    SpadeGenerator,
    generator_channels,
    reparameterize,
)
from spade.paths import DISTILL_CHECKPOINT, DISTILL_LIVE, DISTILL_METRICS, STUDENT
from spade.steps import (
    Losses,
    adversarial_losses,
    autocast,
    discriminator_phase,
    generator_phase,
    region_mix,
)
from spade.train import Job, TrainPaths, TrainResult, fit
from spade.train_state import TrainState, build_state

log = logging.getLogger(__name__)

DISTILL_PATHS = TrainPaths(
    checkpoint=DISTILL_CHECKPOINT,
    generator=STUDENT,
    live_dir=DISTILL_LIVE,
    metrics=DISTILL_METRICS,
    discriminator=None,
)


# --------------------------------------------------------------------------- the step


class Adapters(nn.Module):
    """1×1 convolutions from the student's block widths to the teacher's (GAN Compression)."""

    def __init__(self, student: list[int], teacher: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(s, t, 1) for s, t in zip(student, teacher, strict=True)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, features, strict=True)]


def tapped_blocks(generator: SpadeGenerator) -> list[int]:
    """The blocks whose outputs distillation matches: three, evenly spaced, the last included."""
    n = len(generator.blocks)
    return sorted({n // 3, (2 * n) // 3, n - 1})


@contextmanager
def block_outputs(generator: SpadeGenerator) -> Iterator[list[torch.Tensor]]:
    """Collect the tapped blocks' outputs of the forward passes run inside the block."""
    outputs: list[torch.Tensor] = []
    hooks = [
        generator.blocks[i].register_forward_hook(lambda _m, _i, out: outputs.append(out))
        for i in tapped_blocks(generator)
    ]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def distill_step(
    state: TrainState,
    rough: torch.Tensor,
    real: torch.Tensor,
    cfg: DistillConfig,
    rng: RandomStream = GLOBAL_RNG,
) -> Losses:
    """One distillation step. The frozen teacher draws the style z from the real face (its own
    encoder, which the student shares) and the noise; the student paints with the same z and
    noise, and learns the teacher's intermediate features, its face and the real one. Besides
    the losses summed into `loss_g`, it returns each tapped block's feature loss (`loss_feat0`,
    …, in block order) for the logs."""
    teacher = state.teacher
    assert teacher is not None and state.adapters is not None
    mix = region_mix(rough, cfg, rng)
    with torch.no_grad(), autocast(cfg, rough.device):
        masks = None
        if mix is None:
            mu, logvar = teacher.encoder(real)
        else:  # as in training: the codes of the real face's mixed regions and of the rest
            masks = torch.cat([1 - mix, mix], dim=1)
            mu, logvar = teacher.encoder.regions(real, masks)
        z = reparameterize(mu, logvar, rng)
        noise = teacher.generator.draw_noise(rng, len(rough), rough.device)
        with block_outputs(teacher.generator) as target:
            taught = teacher.generator(rough, z, noise=noise, masks=masks)
    with autocast(cfg, rough.device), block_outputs(state.bare_g.generator) as features:
        fake, _, _ = state.g(rough, z=z, noise=noise, masks=masks)
    loss_d, real_out = discriminator_phase(state, fake, rough, real, cfg)
    with autocast(cfg, rough.device):
        losses = adversarial_losses(state, fake, rough, real, real_out, cfg)
        if cfg.lambda_teacher > 0:
            losses["teacher"] = cfg.lambda_teacher * F.l1_loss(fake.float(), taught.float())
        if cfg.lambda_feat > 0:
            mapped = state.adapters(features)
            mse = [F.mse_loss(m.float(), t.float()) for m, t in zip(mapped, target, strict=True)]
            losses["feat"] = cfg.lambda_feat * torch.stack(mse).sum()
    logged = generator_phase(state, loss_d, losses)
    if cfg.lambda_feat > 0:  # each tapped block's share of loss_feat (G_distill%d), for the logs
        logged |= {f"loss_feat{k}": cfg.lambda_feat * m.detach() for k, m in enumerate(mse)}
    return logged


# --------------------------------------------------------------------------- the job


def student_arch(teacher: GeneratorArch, cfg: DistillConfig) -> GeneratorArch:
    """The teacher's architecture with the student's widths."""
    return teacher.model_copy(update=cfg.arch.model_dump())


def make_student(teacher: FaceModel, cfg: DistillConfig) -> FaceModel:
    """A new student with the teacher's style encoder and mapping network, frozen."""
    student = FaceModel(student_arch(teacher.arch, cfg), teacher.image_size)
    shared = [("encoder", student, teacher), ("mapping", student.generator, teacher.generator)]
    for name, mine, theirs in shared:
        if getattr(theirs, name) is not None:
            setattr(mine, name, copy.deepcopy(getattr(theirs, name)))
    return student.freeze_style()


def adapters_for(student: FaceModel, teacher: FaceModel) -> Adapters:
    """The adapters from the student's tapped block widths to the teacher's."""
    taps = tapped_blocks(teacher.generator)
    widths = [generator_channels(m.arch, m.image_size) for m in (student, teacher)]
    return Adapters([widths[0][i] for i in taps], [widths[1][i] for i in taps])


def distill(
    cfg: DistillConfig,
    run: LoopRun,
    env: DistEnv,
    teacher_file: Path,
    discriminator_file: Path,
    paths: TrainPaths = DISTILL_PATHS,
) -> TrainResult:
    """Train the student of the teacher in `teacher_file` and write it to `paths.generator`."""
    teacher, recipe = load_generator(teacher_file, env.device)
    if teacher.encoder is None:
        raise UserError(
            f"{teacher_file} has no style encoder: distillation shares the teacher's encoder; "
            "train the teacher with train.arch.use_vae: true"
        )
    for key in ("ngf", "spade_hidden"):
        if getattr(cfg.arch, key) > getattr(teacher.arch, key):
            raise UserError(
                f"distill.arch.{key} = {getattr(cfg.arch, key)} is wider than the teacher's "
                f"({getattr(teacher.arch, key)}): a student is narrower"
            )
    digest = hashlib.sha1(teacher_file.read_bytes()).hexdigest()

    def build(image_size: int, env: DistEnv) -> TrainState:
        if image_size != teacher.image_size:
            raise UserError(
                f"the data is {image_size} px but the teacher paints {teacher.image_size} px: "
                "run `dvc repro train` first"
            )
        student = make_student(teacher, cfg)
        disc = load_discriminator(discriminator_file)
        adapters = adapters_for(student, teacher)
        return build_state(student, disc, cfg, env, adapters=adapters, teacher=teacher)

    job = Job(cfg, run, paths, recipe, build=build, step=distill_step, upstream={"teacher": digest})
    log.info(
        "distilling %s (ngf %d, spade_hidden %d) into a student of ngf %d, spade_hidden %d",
        teacher_file,
        teacher.arch.ngf,
        teacher.arch.spade_hidden,
        cfg.arch.ngf,
        cfg.arch.spade_hidden,
    )
    return fit(job, env)
