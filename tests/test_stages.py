"""Stages with worker processes under a group SIGTERM (`timeout`, Slurm's scancel, a job's time
limit): the stage stops at once, leaves no process and no temporary file, and keeps the
previous outputs. (Training, which checkpoints first, is tested in test_train.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from devtools.scratch import merge

from conftest import ROOT, group_alive, launch_stage

pytestmark = pytest.mark.slow


def params_dir(tmp: Path, **sections: dict) -> Path:
    """`tmp` with params.yaml and `sections` merged over it (nested sections key by key)."""
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), sections)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


def stop_group_when(proc, ready, timeout: float = 120) -> float:
    """SIGTERM the stage's process group once `ready()`; seconds until the group is gone."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the stage never got going"
        time.sleep(0.05)
    time.sleep(0.5)  # workers busy
    os.killpg(proc.pid, signal.SIGTERM)
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    while group_alive(proc.pid) and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert not group_alive(proc.pid), "a worker outlived the signal"
    assert proc.returncode == 130 and "interrupted: nothing was written" in out, out
    assert "Traceback" not in out, out
    return time.monotonic() - t0


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_demo_stops_and_keeps_the_previous_zip(tmp_path):
    cwd = params_dir(tmp_path, demo={"count": 4000}, run={"demo": {"n_jobs": 2}})
    zip_path = cwd / "data/demo/faces.zip"
    zip_path.parent.mkdir(parents=True)
    zip_path.write_bytes(b"previous")
    proc = launch_stage("demo", cwd, own_group=True)
    seconds = stop_group_when(proc, lambda: bool(leftovers(cwd)))  # its temporary appeared
    assert seconds < 10
    assert zip_path.read_bytes() == b"previous" and leftovers(cwd) == []


def test_roughen_stops_and_keeps_what_it_finished(tmp_path):
    from conftest import blob_image

    rng = np.random.default_rng(0)
    cwd = params_dir(tmp_path, run={"roughen": {"n_jobs": 2, "batch_size": 4}})
    sampled = cwd / "data/sampled"
    sampled.mkdir(parents=True)
    for split, n in (("train", 400), ("test", 8)):
        np.save(sampled / f"{split}.npy", np.stack([blob_image(rng, 64) for _ in range(n)]))
    cache = tmp_path / "cache"
    proc = launch_stage("roughen", cwd, own_group=True, SPADE_ROUGHEN_CACHE=str(cache))
    seconds = stop_group_when(proc, lambda: cache.is_dir() and any(cache.rglob("*")))
    assert seconds < 10
    assert not (cwd / "data/roughs").exists() or leftovers(cwd / "data/roughs") == []
    assert leftovers(cache) == []
