"""Atomic writes: a failure (an exception, a full disk) leaves the previous files and no temps."""

import errno
import zipfile

import numpy as np
import pytest

from spade.files import atomic_path, atomic_paths, npz_bytes, write_json


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
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_interrupt_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"v": 1})
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
