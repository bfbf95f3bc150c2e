"""Process pools for the CPU-bound stages (demo, roughen): joblib, results in order, no orphans.

A worker exits as soon as the process that started it is gone, so killing a stage (even with
SIGKILL) never leaves workers running on as orphans; it ignores Ctrl-C and SIGTERM, which are
its parent's to handle (the parent stops the pool).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from joblib import Parallel, delayed, effective_n_jobs

_watchdog_started = False


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # the parent died: do not run on as an orphan
            os._exit(1)


def _watch_parent() -> None:
    """In a worker process: start (once) a thread that exits when the parent is gone."""
    global _watchdog_started
    if not _watchdog_started:
        _watchdog_started = True
        args = (os.getppid(),)
        threading.Thread(target=_exit_when_orphaned, args=args, daemon=True).start()


def ignore_stop_signals(*_args: Any) -> None:
    """In a worker process: Ctrl-C and SIGTERM are for the parent, which decides when workers
    stop. A group signal (`kill -TERM -<pgid>`, `timeout`, Slurm's scancel) reaches every
    process at once; workers dying of it first would leave the parent nothing to finish with."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _call(fn: Callable[[Any], Any], item: Any, in_worker: bool) -> Any:
    # A loky worker runs calls on its main thread; a Dask worker (roughen.scheduler) on threads
    # of a process Dask manages, whose signals and lifetime are Dask's, not ours.
    if in_worker and threading.current_thread() is threading.main_thread():
        ignore_stop_signals()
        _watch_parent()
    return fn(item)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], n_jobs: int) -> Iterator[Any]:
    """fn(item) for each item on `n_jobs` processes (-1: all cores), yielded in input order as
    they finish. `fn` must be picklable (a module-level function or a partial of one)."""
    in_worker = effective_n_jobs(n_jobs) > 1
    calls = (delayed(_call)(fn, item, in_worker) for item in items)
    return Parallel(n_jobs=n_jobs, return_as="generator")(calls)
