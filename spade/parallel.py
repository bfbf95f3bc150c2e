"""Process pools for the CPU-bound stages (demo, roughen): joblib, results in order, no orphans.

A worker dies with the process that started it, from its first instant: loky runs `_start_worker`
in each worker before anything else, which asks the kernel to SIGKILL the worker when its parent
dies (Linux's PR_SET_PDEATHSIG; elsewhere a thread polls the parent's pid), and exits at once if
the parent is already gone. So killing a stage, even with SIGKILL and even while its pool is still
starting, leaves no worker behind; and with the workers gone, the pool's resource trackers (which
exit when the last process that could write to them has) go too. A worker ignores Ctrl-C and
SIGTERM, which are its parent's to handle: the parent stops the pool.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from joblib import Parallel, delayed
from joblib._parallel_backends import LokyBackend
from joblib.parallel import get_active_backend

from spade.console import ignore_stop_signals

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """End this process when `parent` (the pid that started it) is gone, already or later."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the kernel was told to watch it
        os._exit(1)


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _start_worker(parent: int) -> None:
    ignore_stop_signals()
    die_with_parent(parent)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], n_jobs: int) -> Iterator[Any]:
    """fn(item) for each item on `n_jobs` processes (-1: all cores), yielded in input order as
    they finish. `fn` must be picklable (a module-level function or a partial of one). Under
    another joblib backend (Dask's, `run.roughen.scheduler`) its workers' lifetime is its own."""
    backend, _ = get_active_backend()
    local = {"initializer": _start_worker, "initargs": (os.getpid(),)}
    kwargs = local if isinstance(backend, LokyBackend) else {}
    calls = (delayed(fn)(item) for item in items)
    return Parallel(n_jobs=n_jobs, return_as="generator", **kwargs)(calls)
