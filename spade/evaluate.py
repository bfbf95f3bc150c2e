"""Evaluation: generate the test faces, then FID/KID and paired L1/PSNR/SSIM, with the rough as
baseline.

FID from fewer than `FID_MIN_IMAGES` images is biased upward and not comparable across test-set
sizes; the metrics file says so, and KID (unbiased) is the number to compare on small sets.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spade.data import isolated_rng, to_model_range, to_uint8_hwc
from spade.errors import UserError
from spade.images import atomic_path, make_grid, save_png
from spade.metrics import (
    INCEPTION_ID,
    extract_features,
    feature_statistics,
    fid_from_features,
    kernel_inception_distance,
    paired_metrics,
)
from spade.networks import StyledGenerator

log = logging.getLogger(__name__)

FID_MIN_IMAGES = 2048


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device 'cuda' was asked for but CUDA is not available; use 'auto' or 'cpu'"
        )
    return torch.device(name)


@torch.no_grad()
def generate_faces(
    model: StyledGenerator, roughs: np.ndarray, *, seed: int, batch_size: int, out: np.ndarray
) -> None:
    """Fill `out` with G(rough) for every rough, batched, with a fixed seed for z and noise."""
    device = next(model.parameters()).device
    with isolated_rng(device):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(roughs), batch_size), desc="generate", unit="batch"):
            # np.array copies: the memory-mapped input is read-only
            batch = torch.from_numpy(np.array(roughs[start : start + batch_size]))
            cond = to_model_range(batch.to(device).permute(0, 3, 1, 2))
            fake, _, _ = model(cond)
            out[start : start + len(batch)] = to_uint8_hwc(fake)


def save_reference(path: Path, features: np.ndarray) -> None:
    mu, sigma = feature_statistics(features)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, features=features, mu=mu, sigma=sigma)


def load_reference(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as ref:
        return {k: ref[k] for k in ("features", "mu", "sigma")}


def distribution_metrics(
    features: np.ndarray,
    ref: dict[str, np.ndarray],
    *,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
) -> dict[str, float]:
    kid_mean, kid_std = kernel_inception_distance(
        features, ref["features"], n_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    return {
        "fid": fid_from_features(features, ref["features"]),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    }


def evaluate_images(
    generated: np.ndarray,
    roughs: np.ndarray,
    real: np.ndarray,
    ref: dict[str, np.ndarray],
    *,
    device: torch.device,
    feature_batch: int,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
) -> dict[str, Any]:
    """All metrics for the generated faces, and the same for the roughs as a baseline."""
    metrics: dict[str, Any] = {}
    for name, images in (("", generated), ("_rough", roughs)):
        feats = extract_features(images, device=device, batch_size=feature_batch)
        dist = distribution_metrics(
            feats, ref, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed
        )
        paired = paired_metrics(images, real)
        metrics |= {f"{k}{name}": round(float(v), 6) for k, v in (dist | paired).items()}
    n = len(generated)
    metrics |= {
        "n_images": n,
        "fid_reliable": n >= FID_MIN_IMAGES,
        "feature_network": INCEPTION_ID,
    }
    if n < FID_MIN_IMAGES:
        metrics["note"] = (
            f"FID from {n} < {FID_MIN_IMAGES} images is biased upward and not comparable "
            "across test-set sizes; compare runs by KID"
        )
    return metrics


def save_grid(path: Path, roughs: np.ndarray, generated: np.ndarray, real: np.ndarray, rows: int):
    rows = min(rows, len(roughs))
    save_png(path, make_grid([roughs[:rows], generated[:rows], real[:rows]]))
