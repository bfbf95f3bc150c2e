"""Atomic writes: a failure (an exception, a full disk) leaves the previous files and no temps."""

import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spade.errors import UserError
from spade.files import atomic_path, atomic_paths, json_bytes, npz_bytes, write_bytes


def test_success_replaces_every_target(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "sub/b.txt"
    with atomic_paths([a, b]) as (ta, tb):
        ta.write_text("A")
        tb.write_text("B")
        assert not a.exists()
    assert (a.read_text(), b.read_text()) == ("A", "B")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]


def test_failure_keeps_all_previous_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(OSError), atomic_paths([a, b]) as (ta, _):
        ta.write_text("new a")
        raise OSError(errno.EIO, "Input/output error")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_full_disk_is_one_line_naming_the_file_and_the_space(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"good")
    real_write = Path.write_bytes

    def full(self, data):
        real_write(self, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(UserError) as e:
        write_bytes(path, b"x" * 3 * 2**20)
    message = str(e.value)
    assert str(path) in message and "they need 3.0 MiB" in message and "free" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "faces.zip"
    killed = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(killed.stdout)
    stale = tmp_path / f".faces.zip.{dead_pid}.abc123.tmp"  # as a SIGKILLed writer leaves it
    old_format = tmp_path / ".faces.zip.xyz789.tmp"  # from a version without the pid
    live = tmp_path / f".faces.zip.{os.getpid()}.def456.tmp"  # someone writing right now
    for p in (stale, old_format, live):
        p.write_bytes(b"half a zip")
    write_bytes(target, b"zip")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["faces.zip", live.name])


def test_interrupt_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.json"
    write_bytes(path, json_bytes({"v": 1}))
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_npz_is_byte_stable_and_loadable():
    arrays = {"mu": np.arange(3.0), "features": np.ones((2, 3))}
    a, b = npz_bytes(**arrays), npz_bytes(**arrays)
    assert a == b
    import io

    with np.load(io.BytesIO(a)) as f:
        np.testing.assert_array_equal(f["features"], arrays["features"])
    assert zipfile.ZipFile(io.BytesIO(a)).infolist()[0].date_time == (1980, 1, 1, 0, 0, 0)


def test_user_cache_dir_one_rule_for_every_cache(tmp_path, monkeypatch):
    from spade.files import user_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SPADE_ROUGHEN_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("SPADE_ONNX_CACHE", "")  # empty: the default
    assert user_cache_dir("roughen") == tmp_path / "mine"
    assert user_cache_dir("onnx") == tmp_path / "xdg/spade-anime/onnx"
