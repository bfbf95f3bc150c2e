"""`spade.paths` is the one list of the pipeline's files, and `dvc.yaml` agrees with it: every
data, model, log and metrics path a stage declares is one of its paths (or inside one), every
tracked path is some stage's output, and the training jobs write where their stages declare."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml

from spade import paths
from spade.distill import DISTILL_PATHS
from spade.train import TrainPaths

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC["stages"]
NOT_FILES = ("spade/", "stages/", "params.yaml", "${")  # code, params, templated deps


def entries(items: list) -> set[PurePosixPath]:
    """The paths of a deps, outs or metrics list (an entry may be `{path: options}`)."""
    names = [next(iter(i)) if isinstance(i, dict) else i for i in items]
    return {PurePosixPath(n) for n in names if not n.startswith(NOT_FILES)}


def outs(stage: dict) -> set[PurePosixPath]:
    return entries(stage.get("outs", [])) | entries(stage.get("metrics", []))


def declared() -> set[PurePosixPath]:
    """Every path constant of `spade.paths`."""
    values = [v for v in vars(paths).values() if isinstance(v, Path)]
    return {PurePosixPath(v.as_posix()) for v in values}


def known(path: PurePosixPath) -> bool:
    """One of the paths, or inside one of the stages' folders (not just anywhere in data/)."""
    places = declared() - {PurePosixPath(paths.DATA.as_posix())}
    return any(path == p or p in path.parents for p in places)


def test_every_file_dvc_yaml_names_is_one_of_the_paths():
    named = set()
    for stage in STAGES.values():
        named |= entries(stage.get("deps", [])) | outs(stage)
    named |= {PurePosixPath(a["path"]) for a in DVC.get("artifacts", {}).values()}
    assert named and {str(p) for p in named if not known(p)} == set()


def test_every_tracked_path_is_the_output_of_one_stage():
    produced = [p for stage in STAGES.values() for p in outs(stage)]
    assert len(produced) == len(set(produced))
    tracked = declared() - {PurePosixPath(p.as_posix()) for p in paths.UNTRACKED}
    folders = {PurePosixPath(paths.DATA.as_posix())}  # the parent of the data stages' outputs
    for path in tracked - folders:
        assert path in produced or any(o in path.parents for o in produced), path
    assert not {PurePosixPath(p.as_posix()) for p in paths.UNTRACKED} & set(produced)


def test_training_jobs_write_where_their_stages_declare():
    for name, job in (("train", TrainPaths()), ("distill", DISTILL_PATHS)):
        written = {job.generator, job.live_dir, job.metrics} | (
            {job.discriminator} if job.discriminator else set()
        )
        assert {PurePosixPath(p.as_posix()) for p in written} == outs(STAGES[name])
        deps = entries(STAGES[name]["deps"])
        for split in paths.SPLITS:
            roughs, real = job.split(split)
            assert {
                PurePosixPath(roughs.parent.as_posix()),
                PurePosixPath(real.parent.as_posix()),
            } <= deps
