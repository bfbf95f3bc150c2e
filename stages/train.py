"""Stage `train`: SPADE GAN training, one process or, with `train.nproc` > 1, one per GPU.

Parameters are validated first, and the VGG19 weights fetched if the perceptual loss is on; with
nproc > 1 the stage then replaces itself with `torchrun --standalone --nproc_per_node=<nproc>`
running this same file (DDP).
"""

from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.losses import fetch_vgg19
from spade.numerics import pin_cpu_numerics
from spade.train import TrainPaths, launch, train


def main() -> None:
    params = load_params()
    pin_cpu_numerics(params.cpu, resolve_device("auto"))  # as training picks
    cfg = params.train
    fetch_vgg19(params, "train")
    run_cfg, recipe = params.run.train, params.roughen  # the recipe: saved in the model
    launch(__file__, cfg, lambda env: train(cfg, run_cfg, env, TrainPaths(), recipe))


if __name__ == "__main__":
    run(main, outputs_kept=True)  # persist outputs in dvc.yaml: DVC leaves the model in place
