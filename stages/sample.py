"""Stage `sample`: deterministic train/test sample, resized and packed into .npy arrays."""

from spade import paths
from spade.config import load_params
from spade.console import run
from spade.sample import sample_images


def main() -> None:
    sample_images(load_params().sample, paths.SAMPLED)


if __name__ == "__main__":
    run(main)
