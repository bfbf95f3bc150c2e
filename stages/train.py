"""Stage `train`: SPADE GAN training, one process or, with `train.nproc` > 1, one per GPU.

Parameters are validated first; with nproc > 1 the stage then replaces itself with
`torchrun --standalone --nproc_per_node=<nproc>` running this same file (DDP).
"""

import logging
import os
import sys

from spade.config import load_params
from spade.console import run
from spade.dist import init_distributed, shutdown
from spade.train import StopRequested, TrainPaths, train

log = logging.getLogger("spade.train")


def relaunch_under_torchrun(nproc: int) -> None:
    """exec, not a child process: Ctrl-C and SIGTERM reach torchrun (and so every rank)."""
    args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__]
    os.execv(sys.executable, [sys.executable, *args])


def main() -> None:
    params = load_params()
    if params.train.nproc > 1 and "LOCAL_RANK" not in os.environ:
        relaunch_under_torchrun(params.train.nproc)
    env = init_distributed()
    if not env.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        train(params.train, env, TrainPaths(), params.roughen.recipe)
    except StopRequested as e:
        if env.is_main:
            log.warning("%s: checkpoint saved; run `dvc repro` again to resume", e)
        sys.exit(128 + e.signum)
    finally:
        shutdown(env)


if __name__ == "__main__":
    run(main)
