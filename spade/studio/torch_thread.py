"""One thread for the studio's PyTorch work: loading the model, measuring it, painting.

On Linux PyTorch runs its parallel operators on libgomp, which gives every thread that starts
parallel work a team of worker threads of its own. Once all teams' threads outnumber the CPUs,
libgomp stops letting idle workers spin between parallel regions, and each of the hundreds of
small operators of an incremental redraw then waits for its team to wake up. A server that
loads its model in the main thread and paints in another has two teams: measured with the
full-preset student at 256 px (2 cores, AVX2, fp32), a 3 % stroke took 78 ms instead of 58 ms,
and the faces were no different. So everything that runs the model goes through this thread.
With `Limits.workers` above 1 the studio paints in that many threads of its own instead
(several teams, on purpose).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="torch")
_inside = threading.local()


def _marked(fn: Callable[[], T]) -> T:
    _inside.yes = True
    return fn()


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` in the torch thread, waited for (called from that thread, at once:
    waiting for itself would never end)."""
    if getattr(_inside, "yes", False):
        return fn(*args, **kwargs)
    return EXECUTOR.submit(_marked, lambda: fn(*args, **kwargs)).result()
