"""Kernel Inception Distance: unbiased squared MMD with a cubic polynomial kernel.

Unlike FID, the estimate is unbiased at any N (it can be slightly negative), so it is the
better number for small test sets.
"""

from __future__ import annotations

import numpy as np

from spade.errors import UserError


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all pairs of rows; [n, d] x [m, d] -> [n, m]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of the squared MMD between samples x [n, d] and y [m, d]."""
    n, m = len(x), len(y)
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def _check_pair(f1: np.ndarray, f2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise UserError(f"features must be [N1, D] and [N2, D], got {f1.shape} and {f2.shape}")
    if min(len(f1), len(f2)) < 2:
        raise UserError(f"KID needs at least 2 feature vectors per set, got {len(f1)}, {len(f2)}")
    return f1, f2


def kernel_inception_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    *,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets, as (mean, std) over random subsets.

    Each subset pairs `subset_size` rows of f1 with as many of f2, each drawn without
    replacement from `np.random.default_rng(seed)`. When the smaller set has no more than
    `subset_size` rows, subsets shrink to half of it (at least 2): subsets as large as the whole
    set would all be identical and report a std of 0. The std is over subsets (ddof=0,
    as torch-fidelity reports it), a spread of the estimates, not a standard error.
    """
    f1, f2 = _check_pair(f1, f2)
    if n_subsets < 1 or subset_size < 2:
        raise UserError(f"need n_subsets >= 1 and subset_size >= 2, got {n_subsets}, {subset_size}")
    n_min = min(len(f1), len(f2))
    size = subset_size if subset_size < n_min else max(2, n_min // 2)
    rng = np.random.default_rng(seed)
    estimates = np.empty(n_subsets)
    for i in range(n_subsets):
        x = f1[rng.choice(len(f1), size, replace=False)]
        y = f2[rng.choice(len(f2), size, replace=False)]
        estimates[i] = mmd2_unbiased(x, y)
    return float(estimates.mean()), float(estimates.std())
