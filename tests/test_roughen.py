import cv2
import numpy as np
import pytest

from spade.roughen import Recipe, RoughCache, roughen_array, roughen_image

from conftest import blob_image

SEED_RECIPE = Recipe()  # 9, 52, 52, 1, 15
SMALL = Recipe(median_before=3, spatial_radius=10, color_radius=30, max_level=1, median_after=5)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([blob_image(rng, 32) for _ in range(10)])


def direct_opencv(rgb: np.ndarray, sp=52, sr=52, k1=9, k2=15, max_level=1) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv = cv2.medianBlur(hsv, k1)
    hsv = cv2.pyrMeanShiftFiltering(hsv, sp, sr, maxLevel=max_level)
    hsv = cv2.medianBlur(hsv, k2)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


@pytest.mark.parametrize("recipe", [SEED_RECIPE, SMALL], ids=["seed", "small"])
def test_bit_exact_with_direct_opencv_calls(images, recipe):
    for img in images[:4]:
        expected = direct_opencv(
            img,
            recipe.spatial_radius,
            recipe.color_radius,
            recipe.median_before,
            recipe.median_after,
            recipe.max_level,
        )
        np.testing.assert_array_equal(roughen_image(img, recipe), expected)


def test_parallel_equals_serial_and_keeps_order(images):
    out1, out2 = np.empty_like(images), np.empty_like(images)
    roughen_array(images, out1, SMALL, n_jobs=1, batch_size=3, progress=False)
    roughen_array(images, out2, SMALL, n_jobs=2, batch_size=3, progress=False)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(out1[7], roughen_image(images[7], SMALL))


def test_cache_hits_and_misses(images, tmp_path):
    cache = RoughCache(tmp_path / "cache")
    out = np.empty_like(images)
    first = roughen_array(images[:8], out[:8], SMALL, n_jobs=1, cache=cache, progress=False)
    assert (first.computed, first.cached) == (8, 0)
    grown = np.empty_like(images)
    again = roughen_array(images, grown, SMALL, n_jobs=1, cache=cache, progress=False)
    assert (again.computed, again.cached) == (2, 8)  # only the new images
    expected = np.empty_like(images)
    roughen_array(images, expected, SMALL, n_jobs=1, progress=False)
    np.testing.assert_array_equal(grown, expected)


def test_cache_key_covers_recipe_and_pixels(images, tmp_path):
    cache = RoughCache(tmp_path)
    other = Recipe(**{**SMALL.__dict__, "median_after": 7})
    assert cache.key(images[0], SMALL) != cache.key(images[0], other)
    assert cache.key(images[0], SMALL) != cache.key(images[1], SMALL)
    changed = images[0].copy()
    changed[0, 0, 0] ^= 1
    assert cache.key(images[0], SMALL) != cache.key(changed, SMALL)


def test_damaged_cache_entry_is_recomputed(images, tmp_path):
    cache = RoughCache(tmp_path)
    out = np.empty_like(images[:2])
    roughen_array(images[:2], out, SMALL, n_jobs=1, cache=cache, progress=False)
    key = cache.key(images[0], SMALL)
    (tmp_path / key[:2] / key).write_bytes(b"short")
    again = np.empty_like(out)
    stats = roughen_array(images[:2], again, SMALL, n_jobs=1, cache=cache, progress=False)
    assert stats.computed == 1
    np.testing.assert_array_equal(again, out)
