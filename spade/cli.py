"""Shared entry-point plumbing: logging set-up and user errors printed as messages."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from spade.errors import UserError

log = logging.getLogger("spade")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def run(main: Callable[[], None]) -> None:
    """Run a stage or command: a `UserError` prints one clear line and exits with status 2."""
    setup_logging()
    try:
        main()
    except UserError as e:
        log.error("%s", e)
        sys.exit(2)
