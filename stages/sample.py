"""Stage `sample`: deterministic train/test sample, resized and packed into .npy arrays."""

from pathlib import Path

from spade.cli import run
from spade.config import SampleConfig, load_section
from spade.sample import sample_images

OUT = Path("data/sampled")


def main() -> None:
    cfg = load_section("sample", SampleConfig)
    sample_images(cfg, OUT)


if __name__ == "__main__":
    run(main)
