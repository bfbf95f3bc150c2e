"""End to end: the real `dvc` CLI on a tiny config in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_repo

pytestmark = pytest.mark.slow

TINY_PARAMS = {
    "demo": {"count": 48, "size": 64},
    "sample": {"n_images": 40, "test_fraction": 0.2, "image_size": 32},
    "roughen": {
        "recipe": {"median_before": 3, "spatial_radius": 8, "median_after": 3},
        "n_jobs": 2,
    },
    "train": {
        "arch": {"ngf": 4, "spade_hidden": 8, "z_dim": 8},
        "disc": {"ndf": 4, "n_layers": 2},
        "batch_size": 8,
        "epochs": 1,
        "decay_epochs": 0,
        "num_workers": 0,
        "log_every": 1,
        "bn_batches": 2,
        "n_samples": 4,
    },
    "features": {"batch_size": 8, "device": "cpu"},
    "evaluate": {"kid_subsets": 10, "grid_rows": 4},
}
EVAL_FIELDS = {
    "fid",
    "kid_mean",
    "kid_std",
    "l1",
    "psnr",
    "ssim",
    "fid_rough",
    "kid_mean_rough",
    "kid_std_rough",
    "l1_rough",
    "psnr_rough",
    "ssim_rough",
    "n_images",
    "fid_reliable",
    "feature_network",
    "note",
    "worse_than_rough",
    "diversity",
}


def dvc_env(cwd: Path) -> dict[str, str]:
    return os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPADE_ROUGHEN_CACHE": str(cwd / ".cache/roughen"),
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
    }


def sh(cwd: Path, *cmd: str) -> str:
    env = dvc_env(cwd)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def merge(base: dict, update: dict) -> dict:
    """`base` with `update`'s values, nested sections merged key by key."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    for path in ("metrics", "dvclive", "data", "models"):  # results of the demo run
        shutil.rmtree(root / path, ignore_errors=True)
    (root / "dvc.lock").unlink(missing_ok=True)
    params = merge(yaml.safe_load((root / "params.yaml").read_text()), TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    sh(root, "dvc", "repro")
    return root


def lock_outs(root: Path, stages: tuple[str, ...]) -> dict:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {s: lock[s]["outs"] for s in stages}


def test_repro_writes_every_metric(repo):
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == EVAL_FIELDS
    assert metrics["n_images"] == 8 and metrics["fid_reliable"] is False
    assert "KID" in metrics["note"] and "tf-inception" in metrics["feature_network"]
    train = json.loads((repo / "metrics/train.json").read_text())
    assert {"test_l1", "test_l1_rough", "worse_than_rough"} <= set(train)
    # one implementation: the same number in both files (same seed, same batch)
    assert (train["test_l1"], train["test_l1_rough"]) == (metrics["l1"], metrics["l1_rough"])
    assert (repo / "data/eval/grid.png").is_file()
    assert (repo / "data/eval/generated.npy").is_file()
    status = sh(repo, "dvc", "status")
    assert "up to date" in status


def test_data_stages_are_reproducible(repo):
    data = ("demo", "sample", "roughen")
    before = lock_outs(repo, data)
    sh(repo, "dvc", "repro", "-f", "roughen")
    assert lock_outs(repo, data) == before
    # the second roughen run came entirely from the cache
    assert (repo / ".cache/roughen").is_dir()


def test_plots_are_declared_and_render(repo):
    shown = json.loads(sh(repo, "dvc", "plots", "show", "--json"))
    names = set(shown["data"])
    assert {"GAN losses", "L1 loss", "Throughput", "data/eval/grid.png"} <= names
    assert "dvclive/plots/images/grids/0000.png" in names
    assert not shown.get("errors")


def test_exp_run_changes_training_and_metrics_diff_shows_it(repo):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    sh(repo, "dvc", "exp", "run", "-S", "train.lr_g=0.003")
    diff = sh(repo, "dvc", "metrics", "diff", "--json")
    changed = json.loads(diff)
    assert "metrics/eval.json" in changed and "kid_mean" in changed["metrics/eval.json"]
    show = sh(repo, "dvc", "exp", "show", "--csv")
    assert "train.lr_g" in show and "0.003" in show and "kid_mean" in show


def test_misspelt_section_fails_by_name(repo):
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params + "trian:\n  epochs: 3\n")
        proc = subprocess.run(
            ["dvc", "repro"], cwd=repo, capture_output=True, text=True, env=dvc_env(repo)
        )
        assert proc.returncode != 0
        assert "unknown section 'trian'" in proc.stdout + proc.stderr
    finally:
        (repo / "params.yaml").write_text(params)


def test_speed_knobs_rerun_nothing(repo):
    params = (repo / "params.yaml").read_text()
    raw = yaml.safe_load(params)
    raw["train"] |= {"num_workers": 1, "log_every": 3, "ckpt_every": 7, "n_samples": 2}
    raw["roughen"] |= {"n_jobs": 1, "batch_size": 5}
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        status = json.loads(sh(repo, "dvc", "status", "--json"))
        assert set(status) <= {"params"}, status  # only the validation stage is due
    finally:
        (repo / "params.yaml").write_text(params)


def test_artifacts_travel_through_a_remote(repo, tmp_path):
    """Push from a clone that ran the pipeline; a fresh clone pulls and reruns nothing."""
    store, origin = tmp_path / "store", tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(origin))
    sh(repo, "dvc", "remote", "add", "-f", "-d", "store", str(store))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results")
    sh(repo, "dvc", "push")
    sh(repo, "git", "push", "-q", str(origin), "HEAD:refs/heads/main")

    fresh = tmp_path / "fresh"
    sh(tmp_path, "git", "clone", "-q", "-b", "main", str(origin), str(fresh))
    sh(fresh, "dvc", "pull")
    assert "up to date" in sh(fresh, "dvc", "status")
    assert "Data and pipelines are up to date" in sh(fresh, "dvc", "repro")
    rough = fresh / "data/roughs/test.npy"
    sh(fresh, sys.executable, "-m", "spade", "export", str(rough), "roughs", "--limit", "1")
    sh(fresh, sys.executable, "-m", "spade", "generate", "roughs/000000.png", "--out", "faces")
    assert (fresh / "faces/000000.png").is_file()
