"""Stage `train`: SPADE GAN training (one process, or one per GPU under torchrun)."""

import logging
import sys
from dataclasses import asdict

from spade.cli import run
from spade.config import RoughenConfig, TrainConfig, load_section
from spade.dist import init_distributed, shutdown
from spade.roughen import Recipe
from spade.train import StopRequested, TrainPaths, train

log = logging.getLogger("spade.train")


def main() -> None:
    cfg = load_section("train", TrainConfig)
    recipe = asdict(Recipe.from_config(load_section("roughen", RoughenConfig)))
    env = init_distributed()
    if not env.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        train(cfg, env, TrainPaths(), recipe)
    except StopRequested as e:
        if env.is_main:
            log.warning("%s: checkpoint saved; run `dvc repro` again to resume", e)
        sys.exit(128 + e.signum)
    finally:
        shutdown(env)


if __name__ == "__main__":
    run(main)
