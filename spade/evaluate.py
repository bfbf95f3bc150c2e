"""Evaluation: FID/KID and paired L1/PSNR/SSIM of the generated test faces, with the rough itself
as the baseline the model must beat.

FID from fewer than `FID_MIN_IMAGES` images is biased upward and not comparable across test-set
sizes; the metrics file says so, and KID (unbiased) is the number to compare on small sets.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from spade.metrics import (
    INCEPTION_ID,
    extract_features,
    fid_from_features,
    kernel_inception_distance,
    paired_metrics,
    worse_than_rough,
)

log = logging.getLogger(__name__)

FID_MIN_IMAGES = 2048


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
        "worse_than_rough": worse_than_rough(metrics["l1"], metrics["l1_rough"]),
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
