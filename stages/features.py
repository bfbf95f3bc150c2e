"""Stage `features`: Inception features and statistics of the real test images (FID reference).

Depends only on the test data, the feature code and the feature parameters, so training
changes never redo it.
"""

from pathlib import Path

from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.images import load_image_array
from spade.metrics import extract_features, save_reference

IN = Path("data/sampled/test.npy")
OUT = Path("data/features/test.npz")


def main() -> None:
    cfg = load_params().features
    images = load_image_array(IN)
    feats = extract_features(images, device=resolve_device(cfg.device), batch_size=cfg.batch_size)
    save_reference(OUT, feats)


if __name__ == "__main__":
    run(main)
