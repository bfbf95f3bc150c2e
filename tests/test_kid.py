"""Kernel Inception Distance: unbiasedness, determinism, small sets."""

import numpy as np
import pytest

from spade.errors import UserError
from spade.metrics.kid import kernel_inception_distance, mmd2_unbiased


def mmd2_loop(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_loop():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((5, 4)) + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_loop(x, y), rel=1e-10)


def test_unbiased_for_same_distribution():
    # Many independent small draws: a biased (V-statistic) estimate would be clearly > 0.
    rng = np.random.default_rng(1)
    estimates = [
        kernel_inception_distance(
            rng.standard_normal((10, 8)), rng.standard_normal((10, 8)), n_subsets=1, seed=i
        )[0]
        for i in range(300)
    ]
    mean, stderr = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean) < 3 * stderr


def test_same_vs_shifted_distribution():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    same, same_std = kernel_inception_distance(a, b, n_subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(a, b + 1.0, n_subsets=20, subset_size=100)
    assert shifted > 0
    assert abs(same) < 0.02 * shifted
    assert shifted > 10 * same_std


def test_deterministic_for_fixed_seed():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((50, 8)), rng.standard_normal((60, 8))
    first = kernel_inception_distance(a, b, n_subsets=5, subset_size=20, seed=7)
    assert first == kernel_inception_distance(a, b, n_subsets=5, subset_size=20, seed=7)
    assert first != kernel_inception_distance(a, b, n_subsets=5, subset_size=20, seed=8)


def test_small_sets_shrink_subsets():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((10, 8)), rng.standard_normal((12, 8)) + 0.5
    # 10 rows <= subset_size: subsets of 5, so the subsets differ and the std is informative.
    mean, std = kernel_inception_distance(a, b, n_subsets=50)
    assert std > 0 and np.isfinite(mean)
    pick = np.random.default_rng(0)
    x, y = a[pick.choice(10, 5, replace=False)], b[pick.choice(12, 5, replace=False)]
    first, _ = kernel_inception_distance(a, b, n_subsets=1, seed=0)
    assert first == pytest.approx(mmd2_unbiased(x, y), rel=1e-10)
    mean, _ = kernel_inception_distance(a[:2], b[:2], n_subsets=3)  # two rows each: size 2
    assert mean == pytest.approx(mmd2_unbiased(a[:2], b[:2]), rel=1e-10)


def test_bad_inputs():
    with pytest.raises(UserError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(UserError):
        kernel_inception_distance(np.zeros((5, 4)), np.zeros((5, 3)))
