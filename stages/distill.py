"""Stage `distill`: train a narrower student generator from the frozen teacher (GAN Compression).

Parameters are validated first, and the VGG19 weights fetched if the perceptual loss is on; with
distill.nproc > 1 the stage then replaces itself with `torchrun` running this same file (DDP), as
`train` does.
"""

from spade import paths
from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.distill import distill
from spade.losses import fetch_vgg19
from spade.numerics import pin_cpu_numerics
from spade.train import launch


def main() -> None:
    params = load_params()
    pin_cpu_numerics(params.cpu, resolve_device("auto"))  # as training picks
    cfg = params.distill
    fetch_vgg19(params, "distill")
    run_cfg = params.run.distill
    launch(
        __file__,
        cfg,
        lambda env: distill(cfg, run_cfg, env, paths.GENERATOR, paths.DISCRIMINATOR),
    )


if __name__ == "__main__":
    run(main, outputs_kept=True)  # persist outputs in dvc.yaml: DVC leaves the student in place
