"""How every stage and command starts and stops: logging, user errors as one line, SIGTERM.

A `UserError` prints as one clear line and exits with status 2, never a traceback. SIGTERM is
handled like Ctrl-C, so temporary files are cleaned up and child processes are stopped.
"""

from __future__ import annotations

import logging
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


def run(main: Callable[[], None]) -> None:
    """Run a stage or command with the project's error and signal handling."""
    setup_logging()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except UserError as e:
        log.error("%s", e)
        sys.exit(2)
    except KeyboardInterrupt:
        log.error("interrupted: nothing was written")
        sys.exit(130)
