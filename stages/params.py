"""Stage `params`: validate the whole params.yaml, so a misspelt section fails by name.

Every stage validates the whole file before it starts; this stage also runs when nothing else
would (an unknown section changes no stage's parameters).
"""

import logging

from spade.config import load_params
from spade.console import run

log = logging.getLogger("spade.params")


def main() -> None:
    load_params()
    log.info("params.yaml: every section is valid")


if __name__ == "__main__":
    run(main)
