"""`make gpu-check` keeps working between GPU sessions: its CPU smoke run, every step, tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

STEPS = {"gpu_tests", "rehearsal", "training", "anchor", "evaluation", "studio"}


@pytest.mark.slow
def test_cpu_smoke_runs_every_step(tmp_path: Path):
    out = tmp_path / "gpu-check.json"
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CUDA_VISIBLE_DEVICES": "",  # the smoke run is the CPU's, also on a GPU machine
    }
    cmd = [sys.executable, "bench/gpu_check.py", "--cpu-smoke", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and set(report["steps"]) == STEPS
    assert all(step["status"] == "ok" for step in report["steps"].values())
    rehearsal = report["steps"]["rehearsal"]["result"]
    assert set(rehearsal["stage_seconds"]) >= {"demo", "roughen", "train", "evaluate"}
    assert {"kid_mean", "diversity", "l1"} <= set(rehearsal["metrics"]["eval"])
    assert (tmp_path / rehearsal["grid"]).read_bytes().startswith(b"\x89PNG")
    training = report["steps"]["training"]["result"]["batch_2"]
    assert training["fp32"]["images_per_s"] > 0
    assert "GPU check on cpu (smoke)" in proc.stdout


def test_without_cuda_it_says_so_and_exits_0():
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout + proc.stderr


def test_the_rehearsal_copies_the_project_also_without_git(monkeypatch):
    """The GPU machine gets the working tree without .git: the scratch copy then lists files
    itself, leaving out the results at the top (metrics/) but not spade/metrics/."""
    from devtools import scratch

    monkeypatch.setattr(scratch.shutil, "which", lambda name: None)
    files = set(scratch.project_files())
    assert {"dvc.yaml", "spade/metrics/__init__.py", "stages/train.py"} <= files
    assert not any(f.split("/")[0] in (*scratch.RESULTS, ".venv", ".git") for f in files)
    assert not any("__pycache__" in f for f in files)
