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

from spade.inference import generate_faces
from spade.metrics import (
    INCEPTION_ID,
    extract_features,
    fid_from_features,
    kernel_inception_distance,
    mean_pairwise_l1,
    paired_metrics,
    worse_than_rough,
)
from spade.networks import StyledGenerator

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


def diversity_metrics(
    model: StyledGenerator,
    roughs: np.ndarray,
    real: np.ndarray,
    generated: np.ndarray,
    *,
    k: int,
    seed: int,
    batch_size: int,
) -> dict[str, float]:
    """Mean pairwise L1 of k faces per test rough: from seeds seed…seed+k−1 (`generated` is the
    first), and, with the style encoder, with z the mean of k other test faces."""
    faces = [generated] + [
        generate_faces(model, roughs, seed=seed + i, batch_size=batch_size) for i in range(1, k)
    ]
    metrics = {"diversity": round(mean_pairwise_l1(faces), 6)}
    if model.encoder is not None:
        styled = [
            generate_faces(
                model, roughs, seed=seed, batch_size=batch_size, styles=np.roll(real, -i, 0)
            )
            for i in range(1, k + 1)
        ]
        metrics["diversity_style"] = round(mean_pairwise_l1(styled), 6)
    return metrics
