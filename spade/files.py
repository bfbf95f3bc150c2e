"""Writing files so that a reader never sees half of one, with the same bytes for the same content.

Everything the pipeline writes goes through `atomic_path`: a temporary file next to the target,
fsynced, then renamed over it in one step, so an interruption (Ctrl-C, SIGKILL, a full disk)
leaves the previous file intact and no temporary behind. `atomic_paths` does the same for a
stage's group of outputs: all of them are replaced, or none.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same content, same bytes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A new empty temporary file next to `path`, removed if still there at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _commit(tmp: Path, path: Path) -> None:
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())  # on disk before it replaces the previous good file
    os.replace(tmp, path)


@contextmanager
def atomic_paths(paths: Sequence[Path | str]) -> Iterator[list[Path]]:
    """Yield one temporary path per target; if the block succeeds, each replaces its target."""
    targets = [Path(p) for p in paths]
    with ExitStack() as stack:
        temps = [stack.enter_context(_temporary(p)) for p in targets]
        yield temps
        for tmp, path in zip(temps, targets, strict=True):
            _commit(tmp, path)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one step."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def write_json(path: Path | str, obj: Any) -> None:
    write_bytes(path, json_bytes(obj))


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An .npz archive (readable by `np.load`) without the timestamps `np.savez` stores."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.save(member, np.asarray(array), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), member.getvalue())
    return buf.getvalue()
