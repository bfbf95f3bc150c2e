"""The FID/KID reference: Inception features and statistics of the real test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spade.files import npz_bytes, write_bytes
from spade.metrics.fid import feature_statistics


def save_reference(path: Path, features: np.ndarray) -> None:
    mu, sigma = feature_statistics(features)
    write_bytes(path, npz_bytes(features=features, mu=mu, sigma=sigma))


def load_reference(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as ref:
        return {k: ref[k] for k in ("features", "mu", "sigma")}
