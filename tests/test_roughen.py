import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from spade.config import Recipe
from spade.errors import UserError
from spade.roughen import RoughCache, roughen_array, roughen_image
from spade.roughen.hsv import hsv_to_rgb
from spade.synthetic import render_face

from conftest import ROOT, blob_image, group_alive, launch_stage

SEED_RECIPE = Recipe()  # 9, 52, 52, 1, 15
SMALL = Recipe(median_before=3, spatial_radius=10, color_radius=30, max_level=1, median_after=5)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([blob_image(rng, 32) for _ in range(10)])


def direct_opencv(rgb: np.ndarray, sp=52, sr=52, k1=9, k2=15, max_level=1) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv = cv2.medianBlur(hsv, k1)
    hsv = cv2.pyrMeanShiftFiltering(hsv, sp, sr, maxLevel=max_level)
    hsv = cv2.medianBlur(hsv, k2)
    return hsv_to_rgb(hsv)  # OpenCV's own depends on the CPU: tests/test_same_bytes.py


@pytest.mark.parametrize("recipe", [SEED_RECIPE, SMALL], ids=["seed", "small"])
def test_bit_exact_with_direct_opencv_calls(images, recipe):
    for img in images[:4]:
        expected = direct_opencv(
            img,
            recipe.spatial_radius,
            recipe.color_radius,
            recipe.median_before,
            recipe.median_after,
            recipe.max_level,
        )
        np.testing.assert_array_equal(roughen_image(img, recipe), expected)


def test_parallel_equals_serial_and_keeps_order(images):
    out1, out2 = np.empty_like(images), np.empty_like(images)
    roughen_array(images, out1, SMALL, n_jobs=1, batch_size=3, progress=False)
    roughen_array(images, out2, SMALL, n_jobs=2, batch_size=3, progress=False)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(out1[7], roughen_image(images[7], SMALL))


def test_cache_hits_and_misses(images, tmp_path):
    cache = RoughCache(tmp_path / "cache")
    out = np.empty_like(images)
    first = roughen_array(images[:8], out[:8], SMALL, n_jobs=1, cache=cache, progress=False)
    assert (first.computed, first.cached) == (8, 0)
    grown = np.empty_like(images)
    again = roughen_array(images, grown, SMALL, n_jobs=1, cache=cache, progress=False)
    assert (again.computed, again.cached) == (2, 8)  # only the new images
    expected = np.empty_like(images)
    roughen_array(images, expected, SMALL, n_jobs=1, progress=False)
    np.testing.assert_array_equal(grown, expected)


def test_cache_key_covers_recipe_and_pixels(images, tmp_path):
    cache = RoughCache(tmp_path)
    other = SMALL.model_copy(update={"median_after": 7})
    assert cache.key(images[0], SMALL) != cache.key(images[0], other)
    assert cache.key(images[0], SMALL) != cache.key(images[1], SMALL)
    changed = images[0].copy()
    changed[0, 0, 0] ^= 1
    assert cache.key(images[0], SMALL) != cache.key(changed, SMALL)


def test_damaged_cache_entry_is_recomputed(images, tmp_path):
    cache = RoughCache(tmp_path)
    out = np.empty_like(images[:2])
    roughen_array(images[:2], out, SMALL, n_jobs=1, cache=cache, progress=False)
    key = cache.key(images[0], SMALL)
    (tmp_path / key[:2] / key).write_bytes(b"short")
    again = np.empty_like(out)
    stats = roughen_array(images[:2], again, SMALL, n_jobs=1, cache=cache, progress=False)
    assert stats.computed == 1
    np.testing.assert_array_equal(again, out)


# --------------------------------------------------------------------------- the stage as a process


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def roughen_dir(tmp: Path, n: int = 48) -> Path:
    """A working directory for `stages/roughen.py` with slow work (the seed recipe, 128 px)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["roughen"] = SEED_RECIPE.model_dump()
    params["run"]["roughen"] |= {"n_jobs": 2, "batch_size": 1}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    faces = np.stack([render_face(3, i, 128) for i in range(n)])
    (tmp / "data/sampled").mkdir(parents=True)
    np.save(tmp / "data/sampled/train.npy", faces)
    np.save(tmp / "data/sampled/test.npy", faces[:4])
    return tmp


def start_stage(cwd: Path, cache: Path) -> subprocess.Popen:
    return launch_stage("roughen", cwd, SPADE_ROUGHEN_CACHE=str(cache))


def wait_for_workers(proc: subprocess.Popen, n: int = 2, timeout: float = 60) -> set[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        workers = children_of(proc.pid)
        if len(workers) >= n:
            time.sleep(1.0)  # let them pick up work
            return children_of(proc.pid)
        time.sleep(0.1)
    raise AssertionError("no worker processes appeared")


def wait_gone(pids: set[int], timeout: float = 10) -> set[int]:
    deadline = time.time() + timeout
    while alive(pids) and time.time() < deadline:
        time.sleep(0.1)
    return alive(pids)


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.2, 1.0, 5.0, "workers appear"])
def test_no_process_outlives_a_killed_stage(tmp_path, after_s):
    """SIGKILL at any moment (while starting, as the pool starts, while it
    works): workers and resource trackers are gone 10 s later, though workers ignore SIGTERM."""
    cwd = roughen_dir(tmp_path / "w")
    proc = launch_stage("roughen", cwd, own_group=True, SPADE_ROUGHEN_CACHE=str(tmp_path / "c"))
    if after_s == "workers appear":  # before they have run anything
        deadline = time.time() + 60
        while len(children_of(proc.pid)) < 3 and time.time() < deadline:
            time.sleep(0.005)
    else:
        time.sleep(after_s)
    assert proc.poll() is None, proc.stdout.read()
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    deadline = time.time() + 10
    while group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = group_alive(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes of the stage killed after {after_s} s are still running"


@pytest.mark.slow
def test_sigterm_is_a_clean_stop(tmp_path):
    cwd = roughen_dir(tmp_path / "w")
    proc = start_stage(cwd, tmp_path / "cache")
    workers = wait_for_workers(proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert wait_gone(workers) == set()
    assert list((cwd / "data/roughs").glob("*")) == []  # no temporary files, no half outputs
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert all(not p.name.endswith(".tmp") for p in entries)  # the cache is consistent


def test_read_only_cache_computes_without_it(images, caplog):
    cache = RoughCache("/proc/spade-roughen-cache")  # not writable, even for root
    out = np.empty_like(images[:3])
    stats = roughen_array(images[:3], out, SMALL, n_jobs=1, cache=cache, progress=False)
    assert stats.computed == 3
    np.testing.assert_array_equal(out[2], roughen_image(images[2], SMALL))
    assert caplog.text.count("not writable") == 1  # warned once


def _fill_cache(args) -> bytes:
    root, images = args
    out = np.empty_like(images)
    roughen_array(images, out, SMALL, n_jobs=1, cache=RoughCache(root), progress=False)
    return out.tobytes()


def test_concurrent_runs_share_one_cache(images, tmp_path):
    """`dvc exp run --queue -j 2`: two workers writing the same entries at once."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_fill_cache, [(tmp_path, images)] * 2))
    assert results[0] == results[1]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == len(images) and not [p for p in files if p.name.endswith(".tmp")]
    again = np.empty_like(images)
    stats = roughen_array(images, again, SMALL, n_jobs=1, cache=RoughCache(tmp_path))
    assert stats.cached == len(images) and again.tobytes() == results[0]


# --------------------------------------------------------------------------- engines


def test_torch_engine_equals_opencv_and_shares_the_cache(images, tmp_path):
    expected = np.empty_like(images[:4])
    roughen_array(images[:4], expected, SMALL, backend="opencv", n_jobs=1, progress=False)
    cache = RoughCache(tmp_path)
    out = np.empty_like(expected)
    stats = roughen_array(images[:4], out, SMALL, backend="torch", cache=cache, progress=False)
    assert stats.computed == 4
    np.testing.assert_array_equal(out, expected)
    again = np.empty_like(expected)
    stats = roughen_array(images[:4], again, SMALL, backend="opencv", cache=cache, progress=False)
    assert stats.cached == 4  # what one engine computed, the other reuses
    np.testing.assert_array_equal(again, expected)


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


@pytest.mark.slow
def test_dask_cluster_gives_the_same_bytes_and_fills_the_cache(images, dask_cluster, tmp_path):
    local = np.empty_like(images)
    roughen_array(images, local, SMALL, n_jobs=1, progress=False)
    cache = RoughCache(tmp_path)
    remote = np.empty_like(images)
    address = dask_cluster.scheduler_address
    stats = roughen_array(
        images, remote, SMALL, scheduler=address, batch_size=2, cache=cache, progress=False
    )
    assert stats.computed == len(images)
    np.testing.assert_array_equal(remote, local)
    again = np.empty_like(images)
    stats = roughen_array(images, again, SMALL, scheduler=address, cache=cache, progress=False)
    assert stats.cached == len(images)


def test_unreachable_scheduler_is_a_clear_error(images, monkeypatch):
    pytest.importorskip("distributed")
    import spade.roughen as roughen_mod

    monkeypatch.setattr(roughen_mod, "SCHEDULER_TIMEOUT_S", 2)
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        roughen_array(images[:2], np.empty_like(images[:2]), SMALL, scheduler="tcp://127.0.0.1:9")
    assert time.monotonic() - t0 < 30
