"""Writing files so that a reader never sees half of one, with the same bytes for the same content.

Everything the pipeline writes goes through `atomic_path`: a temporary file next to the target,
fsynced, then renamed over it in one step, so an interruption (Ctrl-C, SIGTERM, a full disk)
leaves the previous file intact. `atomic_paths` does the same for a stage's group of outputs:
all of them are replaced, or none. A temporary's name holds its writer's process id; one left
behind by a writer that is gone (SIGKILL, a power cut) is removed by the next write of the same
file. A full disk is one line that names the file and the space it needed.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import os
import re
import shutil
import tempfile
import warnings
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


def _writer_gone(tmp: Path, prefix: str) -> bool:
    """Whether the process that named temporary `tmp` has ended (or it has no process id: a
    temporary of an older version)."""
    pid = tmp.name[len(prefix) :].split(".", 1)[0]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of `path` whose writers are gone."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        if _writer_gone(tmp, prefix):
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A new empty temporary file next to `path`, removed if still there at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
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
def atomic_paths(paths: Sequence[Path | str], size: int | None = None) -> Iterator[list[Path]]:
    """Yield one temporary path per target; if the block succeeds, each replaces its target.

    `size` (bytes in all), when known, makes a full disk's message say how much is needed.
    """
    targets = [Path(p) for p in paths]
    with ExitStack() as stack:
        temps = [stack.enter_context(_temporary(p)) for p in targets]
        try:
            yield temps
            for tmp, path in zip(temps, targets, strict=True):
                _commit(tmp, path)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            written = sum(_size(t) for t in temps)
            raise disk_full(targets, written, size) from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def disk_full(targets: Sequence[Path], written: int, size: int | None) -> Exception:
    """The one-line error for a full disk: which files, how much they need, what is free."""
    from spade.errors import UserError

    folder = targets[0].parent
    free = shutil.disk_usage(folder).free
    names = ", ".join(str(t) for t in targets)
    need = f"they need {_mib(size)}" if size else f"{_mib(written)} were written before it ran out"
    return UserError(
        f"no space left on the disk of {folder} while writing {names}: {need}, {_mib(free)} are "
        "free; make room and run again (the previous files are intact)"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one step."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_paths([path], size=len(data)) as (tmp,):
        tmp.write_bytes(data)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def user_cache_dir(name: str) -> Path:
    """The folder of the project's `name` cache ("roughen", "onnx"): `SPADE_<NAME>_CACHE` when
    set and not empty, else `<XDG_CACHE_HOME or ~/.cache>/spade-anime/<name>`. Outside the
    checkout, so every clone and every `dvc exp run --queue` worker (whose temporary workspace
    would start empty) shares it."""
    if folder := os.environ.get(f"SPADE_{name.upper()}_CACHE"):
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spade-anime" / name


def save_torch(path: Path | str, obj: Any) -> None:
    """torch.save through memory: the archive's inner names do not depend on a temp name, so
    the same content gives the same bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def load_torch(path: Path | str, what: str) -> Any:
    """torch.load on the CPU with `weights_only=True` (no pickled code ever runs); a file that
    is not one is a one-line `UserError` naming `what` it should have been."""
    import pickle

    import torch

    from spade.errors import UserError

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol")  # a foreign pickle
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's advice here would be to run the pickle's code
        code = re.search(r"unsupported GLOBAL (\S+)", str(e))
        why = "not PyTorch weights"
        if code:
            why = f"it holds pickled code, {code[1]}, which is never run"
        raise UserError(f"{path} is not a readable {what} ({why})") from None
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}: {first})") from e


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An .npz archive (readable by `np.load`) without the timestamps `np.savez` stores."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.save(member, np.asarray(array), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), member.getvalue())
    return buf.getvalue()
