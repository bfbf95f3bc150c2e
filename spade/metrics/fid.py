"""Fréchet Inception Distance between two sets of features.

FID = ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2), with covariances over N - 1,
all in float64. FID from fewer than a few thousand images is biased upward and only
comparable at equal N; prefer KID for small sets.
"""

from __future__ import annotations

import numpy as np

from spade.errors import UserError


def _as_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise UserError(f"{name} must be 2-D [N, D], got shape {features.shape}")
    return features


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (normalised by N - 1) of features [N, D], float64."""
    features = _as_features(features)
    if len(features) < 2:
        raise UserError(f"need at least 2 feature vectors for a covariance, got {len(features)}")
    mu = features.mean(axis=0)
    sigma = np.cov(features, rowvar=False, ddof=1)
    return mu, np.atleast_2d(sigma)


def _check_stats(mu: np.ndarray, sigma: np.ndarray, dim: int | None = None) -> int:
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(f"mean must be [D] and covariance [D, D], got {mu.shape}, {sigma.shape}")
    if dim is not None and len(mu) != dim:
        raise UserError(f"the two sets have different feature sizes: {dim} and {len(mu)}")
    return len(mu)


def sqrt_trace_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) as the sum of square roots of the eigenvalues of S1 S2.

    S1 S2 is similar to a PSD matrix, so its eigenvalues are real and >= 0 in exact
    arithmetic; rounding makes some slightly negative or complex. Taking the complex
    square root and keeping the real part sends those to ~0 instead of NaN (the form
    used by torch-fidelity and torchmetrics; scipy's sqrtm has had regressions).
    """
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
    return float(np.sqrt(eigenvalues).real.sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    Tiny negative results from rounding are clipped to 0 (the true value is >= 0).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    dim = _check_stats(mu1, sigma1)
    _check_stats(mu2, sigma2, dim)
    diff = mu1 - mu2
    trace = np.trace(sigma1) + np.trace(sigma2) - 2.0 * sqrt_trace_product(sigma1, sigma2)
    return max(float(diff @ diff + trace), 0.0)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets [N1, D] and [N2, D].

    With centred features A and B, Σ1Σ2 = AᵀA BᵀB / ((N1−1)(N2−1)) has the same non-zero
    eigenvalues as (ABᵀ)(ABᵀ)ᵀ, so Tr √(Σ1Σ2) is the sum of the singular values of ABᵀ over
    √((N1−1)(N2−1)). That is exact, and for sets smaller than D (every test set below 2,048
    images) an N1×N2 problem instead of a D×D eigenproblem.
    """
    f1 = _as_features(features1, "features1")
    f2 = _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise UserError(f"feature sizes differ: {f1.shape[1]} and {f2.shape[1]}")
    if max(len(f1), len(f2)) >= f1.shape[1]:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    for f in (f1, f2):
        if len(f) < 2:
            raise UserError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    a, b = f1 - f1.mean(axis=0), f2 - f2.mean(axis=0)
    n1, n2 = len(f1) - 1, len(f2) - 1
    diff = f1.mean(axis=0) - f2.mean(axis=0)
    sqrt_trace = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    trace = (a * a).sum() / n1 + (b * b).sum() / n2 - 2.0 * sqrt_trace
    return max(float(diff @ diff + trace), 0.0)
