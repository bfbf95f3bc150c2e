"""Stage `features`: Inception features and statistics of the real test images (FID reference).

Depends only on the test data and the feature parameters, so training changes never redo it.
"""

from pathlib import Path

from spade.cli import run
from spade.config import FeaturesConfig, load_section
from spade.evaluate import resolve_device, save_reference
from spade.images import load_image_array
from spade.metrics import extract_features

IN = Path("data/sampled/test.npy")
OUT = Path("data/features/test.npz")


def main() -> None:
    cfg = load_section("features", FeaturesConfig)
    images = load_image_array(IN)
    feats = extract_features(images, device=resolve_device(cfg.device), batch_size=cfg.batch_size)
    save_reference(OUT, feats)


if __name__ == "__main__":
    run(main)
