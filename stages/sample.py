"""Stage `sample`: deterministic train/test sample, resized and packed into .npy arrays."""

from pathlib import Path

from spade.config import load_params
from spade.console import run
from spade.sample import sample_images

OUT = Path("data/sampled")


def main() -> None:
    sample_images(load_params().sample, OUT)


if __name__ == "__main__":
    run(main)
