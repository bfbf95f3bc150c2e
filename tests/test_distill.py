"""Distillation: a narrower student of a frozen teacher, with the train loop's standards."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from spade.checkpoint import load_discriminator, load_generator
from spade.config import DistillConfig, LoopRun, TrainConfig
from spade.dist import DistEnv
from spade.distill import DISTILL_PATHS, adapters_for, distill, make_student
from spade.errors import UserError
from spade.networks import generator_channels
from spade.train import TrainPaths, train

from conftest import (
    ARCH,
    RECIPE,
    TINY,
    TINY_PARAMS,
    TINY_RUN,
    launch_stage,
    paths_in,
    stage_dir,
    state_dicts_equal,
    wait_for_checkpoint,
)

TEACHER = TINY | {"arch": ARCH | {"use_vae": True, "z_every_layer": True}}
STUDENT = TINY_PARAMS["distill"]
STUDENT_RUN = LoopRun(**TINY_PARAMS["run"]["distill"])


@pytest.fixture(scope="module")
def teacher(pair_data, tmp_path_factory) -> TrainPaths:
    paths = paths_in(tmp_path_factory.mktemp("teacher"), pair_data)
    train(TrainConfig(**TEACHER), TINY_RUN, DistEnv(), paths, RECIPE)
    return paths


def student_paths(tmp: Path, data: Path) -> TrainPaths:
    return paths_in(tmp, data, DISTILL_PATHS)


def student_cfg(**overrides) -> DistillConfig:
    return DistillConfig(**(STUDENT | overrides))


def test_the_student_is_narrower_and_shares_the_teachers_style(teacher, pair_data, tmp_path):
    paths = student_paths(tmp_path, pair_data)
    result = distill(
        student_cfg(), STUDENT_RUN, DistEnv(), teacher.generator, teacher.discriminator, paths
    )
    assert result.steps == 12 and "test_l1" in result.metrics
    cpu = torch.device("cpu")
    big, recipe = load_generator(teacher.generator, cpu)
    small, student_recipe = load_generator(paths.generator, cpu)  # the generator file's format
    assert student_recipe == recipe and small.image_size == big.image_size
    assert (small.arch.ngf, small.arch.spade_hidden) == (2, 4)
    assert small.arch.model_dump(exclude={"ngf", "spade_hidden"}) == big.arch.model_dump(
        exclude={"ngf", "spade_hidden"}
    )
    # the same style encoder and mapping: z means the same style to both
    assert state_dicts_equal(small.encoder.state_dict(), big.encoder.state_dict())
    assert state_dicts_equal(
        small.generator.mapping.state_dict(), big.generator.mapping.state_dict()
    )
    macs = [sum(generator_channels(m.arch, m.image_size)) for m in (small, big)]
    assert macs[0] < macs[1]
    assert (tmp_path / "metrics/distill.json").is_file()
    assert_block_losses_logged(tmp_path / "dvclive_distill/plots/metrics/distill")


def assert_block_losses_logged(logs: Path) -> None:
    """Each tapped block's feature loss has its plot (GAN Compression's G_distill%d), and they
    add up to loss_feat."""

    def column(name: str) -> np.ndarray:
        return np.loadtxt(logs / f"{name}.tsv", delimiter="\t", skiprows=1, usecols=1, ndmin=1)

    blocks = sorted(logs.glob("loss_feat[0-9].tsv"))
    assert [p.stem for p in blocks] == ["loss_feat0", "loss_feat1", "loss_feat2"]
    total = sum(column(p.stem) for p in blocks)
    np.testing.assert_allclose(total, column("loss_feat"), atol=3e-5)  # each rounded to 1e-5


def test_the_student_starts_from_the_teachers_discriminator_and_taps_its_blocks(teacher):
    cpu = torch.device("cpu")
    big, _ = load_generator(teacher.generator, cpu)
    small = make_student(big, student_cfg())
    assert not any(p.requires_grad for p in small.encoder.parameters())
    adapters = adapters_for(small, big)
    widths = generator_channels(big.arch, big.image_size)
    assert [c.out_channels for c in adapters.convs] == [widths[i] for i in (1, 2, 3)]
    disc = load_discriminator(teacher.discriminator)
    assert disc.arch.ndf == TINY["disc"]["ndf"]


def test_a_wider_student_or_a_teacher_without_encoder_is_refused(teacher, pair_data, tmp_path):
    paths = student_paths(tmp_path, pair_data)
    wide = student_cfg(arch={"ngf": 64, "spade_hidden": 4})
    with pytest.raises(UserError, match=r"distill\.arch\.ngf = 64 is wider than the teacher"):
        distill(wide, STUDENT_RUN, DistEnv(), teacher.generator, teacher.discriminator, paths)
    plain = paths_in(tmp_path / "plain", pair_data)
    no_encoder = TINY | {"epochs": 1, "arch": ARCH | {"use_vae": False}}
    train(TrainConfig(**no_encoder), TINY_RUN, DistEnv(), plain, RECIPE)
    with pytest.raises(UserError, match="has no style encoder"):
        distill(student_cfg(), STUDENT_RUN, DistEnv(), plain.generator, plain.discriminator, paths)


def distill_dir(tmp: Path, teacher: TrainPaths, data: Path) -> Path:
    """A working directory as `dvc repro distill` sees it: params.yaml, data/ and the teacher."""
    stage_dir(tmp, data, "distill", epochs=4)  # run.distill.ckpt_every: 2
    (tmp / "models").mkdir()
    shutil.copy(teacher.generator, tmp / "models/generator.pt")
    shutil.copy(teacher.discriminator, tmp / "models/discriminator.pt")
    return tmp


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(teacher, pair_data, tmp_path):
    runs = {}
    for name in ("whole", "broken"):
        cwd = distill_dir(tmp_path / name, teacher, pair_data)
        proc = launch_stage("distill", cwd, OMP_NUM_THREADS="1")
        if name == "broken":
            wait_for_checkpoint(proc, cwd / "models/distill_checkpoint.pt", min_step=4)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc = launch_stage("distill", cwd, OMP_NUM_THREADS="1")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        runs[name] = torch.load(cwd / "models/student.pt", weights_only=True)["state_dict"]
    assert "resuming from models/distill_checkpoint.pt" in out
    assert state_dicts_equal(runs["whole"], runs["broken"])
