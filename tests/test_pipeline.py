"""End to end: the real `dvc` CLI on a tiny config in a temporary copy of the repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools.scratch import dvc_env as scratch_env
from devtools.scratch import scratch_repo

from conftest import TINY_PARAMS

pytestmark = pytest.mark.slow
GIT_ID = ("-c", "user.name=test", "-c", "user.email=test@localhost")

MODEL_FIELDS = {
    "fid",
    "kid_mean",
    "kid_std",
    "l1",
    "l1_seed",
    "psnr",
    "ssim",
    "worse_than_rough",
    "diversity",
    "diversity_style",
    "style_spread",
    "style_control",
    "style_control_regional",  # the demo's faces come with region maps
    "style_control_regional_kept",
    "kid_regional",
    "kid_styled",
}
EVAL_FIELDS = MODEL_FIELDS | {
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
    "style_probe_accuracy",
    "style_control_chance",
    "style_spread_data",
    "student",
}


def dvc_env(cwd: Path) -> dict[str, str]:
    return scratch_env(cwd, OMP_NUM_THREADS="1")


def sh(cwd: Path, *cmd: str) -> str:
    env = dvc_env(cwd)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = scratch_repo(tmp_path_factory.mktemp("repo"), TINY_PARAMS)
    sh(root, "dvc", "repro")
    return root


def lock_outs(root: Path, stages: tuple[str, ...]) -> dict:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {s: lock[s]["outs"] for s in stages}


def test_repro_writes_every_metric(repo):
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == EVAL_FIELDS
    assert set(metrics["student"]) == MODEL_FIELDS  # the student beside the teacher
    assert set(metrics["style_control"]) == {"shading", "eyes", "hair", "background", "mean"}
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
    assert {"GAN losses", "L1 loss", "data/eval/grid.png"} <= names
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
    raw["run"]["train"] |= {"num_workers": 1, "log_every": 3, "ckpt_every": 7, "n_samples": 2}
    raw["run"]["roughen"] |= {"n_jobs": 1, "batch_size": 5, "backend": "opencv"}
    raw["run"]["demo"] |= {"n_jobs": 1}
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        status = json.loads(sh(repo, "dvc", "status", "--json"))
        assert set(status) <= {"params"}, status  # only the validation stage is due
    finally:
        (repo / "params.yaml").write_text(params)


def test_artifacts_travel_through_a_remote(repo, tmp_path):
    """Push from a clone that ran the pipeline; a fresh clone pulls and reruns nothing."""
    store, origin = tmp_path / "store", tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", "--initial-branch=main", str(origin))
    sh(repo, "dvc", "remote", "add", "-f", "-d", "store", str(store))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", *GIT_ID, "commit", "-qm", "results")
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
    # the models by name and version (a GTO tag), from the remote, without a clone or a run
    for name in ("face-generator", "face-student"):
        sh(repo, "git", *GIT_ID, "tag", "-a", f"{name}@v0.1.0", "-m", "registered")
    sh(repo, "git", "push", "-q", "--tags", str(origin))
    for name, path in (("face-generator", "generator.pt"), ("face-student", "student.pt")):
        got = tmp_path / "got" / path
        sh(tmp_path, "dvc", "artifacts", "get", str(origin), name, "-o", str(got))
        assert got.read_bytes() == (repo / "models" / path).read_bytes()


def test_a_refused_stage_says_how_to_restore_and_persist_outputs_are_kept(repo):
    """DVC deletes a stage's outputs before its command runs, unless they are `persist`: the
    trained models are kept through a failed run; a data stage's failure names the command
    that brings its outputs back."""
    params = (repo / "params.yaml").read_text()
    model = (repo / "models/generator.pt").read_bytes()
    raw = yaml.safe_load(params)
    try:
        raw["train"]["batch_size"] = 1000  # legal, but more than the training images
        raw["features"]["device"] = "cuda"  # refused without CUDA
        (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        for stage, kept in (("train", True), ("features", False)):
            proc = subprocess.run(
                ["dvc", "repro", "-s", stage],
                cwd=repo,
                capture_output=True,
                text=True,
                env=dvc_env(repo),
            )
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0 and "Traceback" not in out, out
            assert (f"dvc checkout {stage}" in out) is not kept, out
        assert (repo / "models/generator.pt").read_bytes() == model  # persist: still there
        assert not (repo / "data/features").exists()  # DVC removed it, as the message said
    finally:
        (repo / "params.yaml").write_text(params)
    sh(repo, "dvc", "checkout", "features")
    assert "up to date" in sh(repo, "dvc", "status")
