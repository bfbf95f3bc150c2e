"""How every stage and command starts and stops: logging, user errors as one line, SIGTERM (and
worker processes that leave the stop signals to their parent).

A `UserError` prints as one clear line and exits with status 2, never a traceback. SIGTERM is
handled like Ctrl-C, so temporary files are cleaned up and child processes are stopped.

Under `dvc repro` (DVC sets DVC_STAGE), DVC has already deleted a stage's outputs when its
command starts, unless they are `persist`; a stage that fails or is interrupted then says which
command brings the previous ones back.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from spade.errors import UserError

log = logging.getLogger("spade")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _restore_hint(outputs_kept: bool) -> None:
    stage = os.environ.get("DVC_STAGE")
    if stage and not outputs_kept:
        log.error(
            "DVC removed the outputs of stage '%s' before it ran: `dvc checkout %s` "
            "restores the previous ones",
            stage,
            stage,
        )


def ignore_stop_signals(*_args: object) -> None:
    """In a worker process (a pool's, a DataLoader's): Ctrl-C and SIGTERM are for the parent,
    which decides when workers stop. A group signal (`kill -TERM -<pgid>`, `timeout`, Slurm's
    scancel) reaches every process at once; workers dying of it first would leave the parent
    nothing to finish with."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run(main: Callable[[], None], *, outputs_kept: bool = False) -> None:
    """Run a stage or command with the project's error and signal handling. `outputs_kept`:
    the stage's outputs are DVC `persist` outputs, which DVC leaves in place."""
    setup_logging()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except UserError as e:
        log.error("%s", e)
        _restore_hint(outputs_kept)
        sys.exit(2)
    except KeyboardInterrupt:
        log.error("interrupted: nothing was written")
        _restore_hint(outputs_kept)
        sys.exit(130)
