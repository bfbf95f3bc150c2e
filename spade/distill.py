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
from pathlib import Path

from spade.checkpoint import load_discriminator, load_generator
from spade.config import DistillConfig, GeneratorArch, LoopRun
from spade.dist import DistEnv
from spade.errors import UserError
from spade.networks import FaceModel, generator_channels
from spade.steps import Adapters, distill_step, tapped_blocks
from spade.train import Job, TrainPaths, TrainResult, fit
from spade.train_state import TrainState, build_state

log = logging.getLogger(__name__)

DISTILL_PATHS = TrainPaths(
    checkpoint=Path("models/distill_checkpoint.pt"),
    generator=Path("models/student.pt"),
    live_dir=Path("dvclive_distill"),
    metrics=Path("metrics/distill.json"),
    discriminator=None,
)


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
        extra = adapters_for(student, teacher)
        return build_state(student, disc, cfg, env, extra=extra, teacher=teacher)

    job = Job(cfg, run, paths, recipe, build=build, step=distill_step, identity={"teacher": digest})
    log.info(
        "distilling %s (ngf %d, spade_hidden %d) into a student of ngf %d, spade_hidden %d",
        teacher_file,
        teacher.arch.ngf,
        teacher.arch.spade_hidden,
        cfg.arch.ngf,
        cfg.arch.spade_hidden,
    )
    return fit(job, env)
