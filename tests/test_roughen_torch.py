"""spade.roughen.torch_engine is bit-exact with OpenCV: every step on its own and the whole recipe.

cv2 is the oracle everywhere: zero differing bytes in every case. Cases follow the note on what
OpenCV computes (borders, the coarse-to-fine mask, the colour threshold, division ties, hue not
wrapping, non-converging pixels). The plain-torch path runs on the CPU; the Triton kernels run
here under TRITON_INTERPRET=1 on small cases (tests named *interpreted*, a few seconds), and
on CUDA in the `gpu` test.
"""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spade.config import Recipe
from spade.roughen import roughen_image
from spade.roughen import torch_engine as rt
from spade.synthetic import render_face

SEED = Recipe(median_before=9, spatial_radius=52, color_radius=52, max_level=1, median_after=15)
DEMO = Recipe(median_before=3, spatial_radius=13, color_radius=52, max_level=1, median_after=5)


@dataclass(frozen=True)
class R:
    """A recipe-like object that is not spade.roughen.Recipe (duck typing)."""

    median_before: int
    spatial_radius: float
    color_radius: float
    max_level: int
    median_after: int


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread here: on a 2-core machine with other work beside, OpenMP threads that
    wait on each other made these tests twice as slow in wall time."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def reference(images: np.ndarray, recipe) -> np.ndarray:
    return np.stack([roughen_image(im, recipe) for im in images])


def assert_same(ours: np.ndarray, expected: np.ndarray) -> None:
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    bad = np.argwhere(ours != expected)
    assert len(bad) == 0, f"{len(bad)} bytes differ, first at {bad[:5].tolist()}"


def shift_ours(hsv: np.ndarray, sp: float, sr: float, level: int, **kw) -> np.ndarray:
    return rt.mean_shift_filter(t(hsv)[None], sp, sr, level, **kw)[0].numpy()


def shift_cv2(hsv: np.ndarray, sp: float, sr: float, level: int) -> np.ndarray:
    return cv2.pyrMeanShiftFiltering(hsv, sp, sr, maxLevel=level)


def blobs(rng: np.random.Generator, h: int, w: int, n: int = 6) -> np.ndarray:
    """Flat background with random ellipses and a soft gradient: face-like flat regions."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, max(3, h / 3)), rng.uniform(2, max(3, w / 3))
        img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.integers(0, 256, 3)
    ramp = (xx * 40 // max(1, w)).astype(np.uint8)[..., None]
    return img // 2 + ramp + rng.integers(0, 3, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# The steps, one by one.


def test_rgb_to_hsv_all_colours():
    for top in range(0, 256, 64):  # 2^24 colours in four 4096×1024 blocks
        c = np.arange(top << 16, (top + 64) << 16, dtype=np.uint32)
        rgb = np.stack([c >> 16, (c >> 8) & 255, c & 255], -1).astype(np.uint8)
        rgb = rgb.reshape(1024, 4096, 3)
        assert_same(rt.rgb_to_hsv(t(rgb)).numpy(), cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))


@pytest.mark.parametrize("ksize", [1, 3, 5, 9, 15])
def test_median_blur(ksize):
    rng = np.random.default_rng(ksize)
    cases = [
        rng.integers(0, 256, (33, 40, 3), dtype=np.uint8),
        (rng.integers(0, 3, (17, 23, 3)) * 60).astype(np.uint8),  # many ties
        rng.integers(0, 2, (1, 1, 3), dtype=np.uint8),
        rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),  # smaller than the kernel
        (rng.integers(0, 2, (7, 5, 3)) * 255).astype(np.uint8),
        np.full((4, 9, 3), 77, np.uint8),
    ]
    for img in cases:
        assert_same(
            rt.median_blur_torch(t(img)[None], ksize)[0].numpy(), cv2.medianBlur(img, ksize)
        )


def test_median_blur_chunked():
    img = np.random.default_rng(0).integers(0, 256, (3, 21, 19, 3), dtype=np.uint8)
    expected = np.stack([cv2.medianBlur(im, 5) for im in img])
    for chunk in (1, 500, 10_000):  # down to one row of one image per chunk
        assert_same(rt.median_blur_torch(t(img), 5, chunk).numpy(), expected)


def test_pyr_down_and_up_every_small_size():
    rng = np.random.default_rng(1)
    for h, w in itertools.product(range(1, 14), range(1, 14)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert_same(rt.pyr_down(t(img)[None])[0].numpy(), cv2.pyrDown(img))
        for dh, dw in itertools.product((2 * h - 1, 2 * h), (2 * w - 1, 2 * w)):
            if dh and dw:
                ours = rt.pyr_up(t(img)[None], (dh, dw))[0].numpy()
                assert_same(ours, cv2.pyrUp(img, dstsize=(dw, dh)))


def test_pyr_down_and_up_odd_large():
    img = np.random.default_rng(2).integers(0, 256, (99, 130, 3), dtype=np.uint8)
    down = rt.pyr_down(t(img)[None])
    assert_same(down[0].numpy(), cv2.pyrDown(img))
    assert_same(
        rt.pyr_up(down, (99, 130))[0].numpy(), cv2.pyrUp(down[0].numpy(), dstsize=(130, 99))
    )


def test_level_radius_and_threshold():
    assert rt.level_radius(13, 1) == 6.5 and rt.level_radius(52, 1) == 26.0
    assert rt.level_radius(1.5, 1) == 1.0  # at least 1
    assert rt.level_radius(0.1, 0) == 1.0
    assert rt.level_radius(0.1 * 3, 0) == 1.0
    assert rt.level_radius(10.3, 1) == float(np.float32(5.15))
    assert rt.color_threshold(52) == 2704 and rt.color_threshold(6.5) == 42


# ---------------------------------------------------------------------------------------------
# pyrMeanShiftFiltering.


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (63, 65), (99, 99)])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_mean_shift_flat(size, level):
    img = np.full((*size, 3), (17, 200, 93), np.uint8)
    for sp, sr in ((52 if level else 13, 52), (6.5, 3)):
        assert_same(shift_ours(img, sp, sr, level), shift_cv2(img, sp, sr, level))


def colours_at(d: int) -> tuple[tuple[int, int, int], ...]:
    """A few colour offsets with squared length exactly d (empty if d has none)."""
    r = int(np.sqrt(d))
    found = [
        (a, b, c)
        for a in range(r + 1)
        for b in range(a + 1)
        if a * a + b * b <= d
        for c in [round(np.sqrt(d - a * a - b * b))]
        if c <= b and a * a + b * b + c * c == d
    ]
    return tuple(found[:: max(1, len(found) // 3)][:3])


@pytest.mark.parametrize("isr2", [16, 42, 2704, 2705])
def test_mean_shift_colour_threshold_boundary(isr2):
    """Colour pairs at squared distance isr2 - 1, isr2, isr2 + 1 (where such colours exist): in
    the window test (<=) at level 0, in the mask test (>= max(isr2, 16)) at level 1."""
    sr = float(np.sqrt(isr2))
    assert rt.color_threshold(sr) == isr2
    base = np.array([60, 90, 120])
    for d in (isr2 - 1, isr2, isr2 + 1):
        for off in colours_at(d):
            img = np.empty((14, 15, 3), np.uint8)
            img[:] = base
            img[3:9, 5:12] = base + off
            img[10:, :4] = base - off
            for level, sp in ((0, 3), (1, 4), (2, 6.5)):
                assert_same(shift_ours(img, sp, sr, level), shift_cv2(img, sp, sr, level))


@pytest.mark.parametrize("sp", [1, 2, 2.5, 3, 5, 6.5, 7, 10.3, 13, 0.4])
def test_mean_shift_radii(sp):
    rng = np.random.default_rng(int(sp * 10))
    img = blobs(rng, 37, 30)
    for level, sr in ((0, 20), (1, 30.5), (2, 52)):
        assert_same(shift_ours(img, sp, sr, level), shift_cv2(img, sp, sr, level))


def stripes_and_checks(h: int, w: int) -> list[np.ndarray]:
    """Stripes and checkerboards with edges next to every border."""
    out = []
    yy, xx = np.mgrid[:h, :w]
    a, b = np.array([10, 200, 30], np.uint8), np.array([160, 20, 240], np.uint8)
    for cut in (1, 2, 3):
        for mask in (yy < cut, yy >= h - cut, xx < cut, xx >= w - cut):
            out.append(np.where(mask[..., None], a, b))
    for period in (1, 2, 3):
        out.append(np.where((((yy // period) + (xx // period)) % 2)[..., None] == 1, a, b))
        out.append(np.where(((xx // period) % 2)[..., None] == 1, a, b))
    return out


@pytest.mark.parametrize("size", [(12, 12), (13, 11), (9, 16)])
def test_mean_shift_borders_and_mask(size):
    """The (2i + 1, 2j - 1) mask offset, the dilation, the rows and columns never recomputed."""
    for img in stripes_and_checks(*size):
        for level, sp, sr in ((1, 2, 40), (1, 3, 100), (2, 4, 40)):
            assert_same(shift_ours(img, sp, sr, level), shift_cv2(img, sp, sr, level))


def tie_cases(limit: int = 9) -> list[tuple[int, int, int]]:
    """(rows, cols, q) with n = rows·cols even, where round(n(q + ½) · (1/n)) differs from
    round(n(q + ½) / n): the reciprocal-then-multiply that OpenCV does is not a division."""
    cases = []
    for rows, cols in itertools.product(range(2, 21), range(2, 21)):
        n = rows * cols
        if n % 2:
            continue
        for q in range(255):
            s = n * q + n // 2
            if np.rint(s * (1.0 / n)) != np.rint(s / n):
                cases.append((rows, cols, q))
                break
    return cases[:: max(1, len(cases) // limit)]


def test_mean_shift_division_ties():
    cases = tie_cases()
    assert len(cases) >= 8
    for rows, cols, q in cases:
        img = np.full((rows + 6, cols + 6, 3), 250, np.uint8)
        yy, xx = np.mgrid[:rows, :cols]
        region = img[3 : 3 + rows, 3 : 3 + cols]
        region[..., 0] = q + (yy + xx) % 2  # half q, half q + 1: mean q + ½
        region[..., 1:] = 0
        sp = float(rows + cols)
        assert_same(shift_ours(img, sp, 8, 0), shift_cv2(img, sp, 8, 0))


def test_mean_shift_hue_does_not_wrap():
    """H = 0 next to H = 179 are 179 apart: no wrap-around in the colour distance."""
    hsv = np.zeros((24, 26, 3), np.uint8)
    hsv[..., 1:] = 200
    hsv[:, 13:, 0] = 179
    hsv[5:9, 3:7, 0] = 1
    hsv[15:20, 16:22, 0] = 178
    for level in (0, 1):
        assert_same(shift_ours(hsv, 6, 52, level), shift_cv2(hsv, 6, 52, level))
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    assert_same(rt.roughen_torch(rgb[None], DEMO), reference(rgb[None], DEMO))


def test_mean_shift_gradients_do_not_converge():
    """Smooth ramps: pixels walk for all five iterations."""
    yy, xx = np.mgrid[:40, :44]
    img = np.stack([xx * 5, yy * 3 + xx, 255 - yy * 6], -1).clip(0, 255).astype(np.uint8)
    radial = (np.hypot(yy - 20, xx - 22) * 6).clip(0, 255).astype(np.uint8)
    for im in (img, np.stack([radial, radial // 2, 255 - radial], -1)):
        for level, sp, sr in ((0, 9, 60), (1, 13, 52), (2, 20, 90)):
            assert_same(shift_ours(im, sp, sr, level), shift_cv2(im, sp, sr, level))


def test_mean_shift_random_noise_small():
    rng = np.random.default_rng(7)
    for h, w in ((1, 7), (6, 1), (2, 5), (5, 2), (17, 23), (32, 32)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for level, sp, sr in ((0, 3, 80), (1, 5, 120), (3, 8, 200)):
            assert_same(shift_ours(img, sp, sr, level), shift_cv2(img, sp, sr, level))


@pytest.mark.parametrize("level", [3, 5, 8])
def test_mean_shift_deep_pyramids(level):
    rng = np.random.default_rng(level)
    for h, w in ((5, 3), (40, 57)):
        img = blobs(rng, h, w)
        assert_same(shift_ours(img, 20, 52, level), shift_cv2(img, 20, 52, level))


def test_mean_shift_chunking_does_not_change_the_result():
    rng = np.random.default_rng(8)
    img = np.stack([blobs(rng, 30, 26) for _ in range(3)])
    expected = np.stack([shift_cv2(im, 6.5, 40, 1) for im in img])
    for chunk in (1, 20_000):  # the fewest pixels per gather, a few hundred
        assert_same(rt.mean_shift_filter(t(img), 6.5, 40, 1, chunk).numpy(), expected)


# ---------------------------------------------------------------------------------------------
# The whole recipe.


@pytest.mark.parametrize(
    ("size", "recipe"),
    [
        ((32, 32), SEED),
        ((48, 61), SEED),
        ((64, 64), SEED),
        ((33, 33), DEMO),
        ((64, 64), DEMO),
        ((97, 131), DEMO),
        ((256, 256), DEMO),
        ((512, 512), DEMO),
    ],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_recipe_random_images(size, recipe):
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    images = np.stack([blobs(rng, *size, n=10) for _ in range(2 if size[0] <= 128 else 1)])
    if size[0] <= 64:  # noise too, where it stays cheap
        images[-1] = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    assert_same(rt.roughen_torch(images, recipe), reference(images, recipe))


@pytest.mark.parametrize(("size", "recipe"), [(64, SEED), (64, DEMO), (128, DEMO)])
def test_recipe_demo_faces(size, recipe):
    faces = np.stack([render_face(3, i, size) for i in range(3 if size <= 64 else 1)])
    assert_same(rt.roughen_torch(faces, recipe), reference(faces, recipe))


@pytest.mark.parametrize(
    "recipe",
    [
        R(1, 3.0, 20.0, 0, 1),
        R(5, 6.5, 30.0, 2, 3),
        R(15, 10.3, 45.5, 1, 15),
        R(3, 4.0, 3.9, 3, 7),
        R(3, 40.0, 1000.0, 1, 3),  # every colour matches
        R(3, 200.0, 52.0, 2, 3),  # boxes larger than the image
    ],
)
def test_recipe_variants(recipe):
    rng = np.random.default_rng(11)
    images = np.stack([blobs(rng, 29, 37) for _ in range(2)])
    assert_same(rt.roughen_torch(images, recipe), reference(images, recipe))


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (5, 7), (14, 9)])
def test_recipe_images_smaller_than_the_median(size):
    rng = np.random.default_rng(size[0])
    images = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    assert_same(rt.roughen_torch(images, SEED), reference(images, SEED))
    flat = np.full((1, *size, 3), (200, 40, 90), np.uint8)
    assert_same(rt.roughen_torch(flat, SEED), reference(flat, SEED))


def test_recipe_batch_in_groups_keeps_order():
    rng = np.random.default_rng(12)
    images = np.stack([blobs(rng, 24, 20) for _ in range(5)])
    expected = reference(images, DEMO)
    assert_same(rt.roughen_torch(images[:1], DEMO), expected[:1])  # N = 1
    for chunk in (480, 1000):  # one image per group, two
        assert_same(rt.roughen_torch(images, DEMO, chunk_pixels=chunk), expected)


def test_recipe_rejects_bad_input():
    img = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        rt.roughen_torch(img.astype(np.float32), DEMO)
    with pytest.raises(ValueError, match="uint8"):
        rt.roughen_torch(img[0], DEMO)
    with pytest.raises(ValueError, match="odd"):
        rt.roughen_torch(img, R(4, 3.0, 3.0, 1, 3))
    with pytest.raises(ValueError, match="max_level"):
        rt.roughen_torch(img, R(3, 3.0, 3.0, 9, 3))
    with pytest.raises(ValueError, match="radius"):
        rt.roughen_torch(img, R(3, 0.0, 3.0, 1, 3))
    with pytest.raises(ValueError, match="radius"):
        rt.roughen_torch(img, R(3, 3.0, 1e5, 1, 3))


# ---------------------------------------------------------------------------------------------
# The Triton kernels: compiled to PTX (no GPU needed), and interpreted on the CPU on small
# cases (each op is a numpy call).


def test_kernel_ptx_is_exact_float_code():
    """Compiled for sm_90 (no GPU needed): no FMA (it would skip the rounding of sum * inv),
    an IEEE float64 reciprocal."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from spade.roughen import triton_kernels

    signature = {"src_ptr": "*i32", "pix_ptr": "*i32", "out_ptr": "*i32", "n_pix": "i32"}
    signature |= {"H": "i32", "W": "i32", "sp": "fp32", "isr2": "i32"}
    signature |= dict.fromkeys(("MAX_ITER", "EPS", "BIG", "BLOCK"), "constexpr")
    constexprs = {"MAX_ITER": 5, "EPS": 1, "BIG": 1 << 30, "BLOCK": 128}
    src = ASTSource(triton_kernels._mean_shift_kernel, signature, constexprs)
    options = {"num_warps": 4, "enable_fp_fusion": False}
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
    assert "div.rn.f64" in ptx
    assert "fma." not in ptx and "div.approx" not in ptx and "div.full" not in ptx


INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
interpreted_only = pytest.mark.skipif(
    not INTERPRETING, reason="runs under TRITON_INTERPRET=1 (test_kernels_interpreted does that)"
)


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETING, reason="this is the interpreted run")
def test_kernels_interpreted():
    """The *_interpreted tests below, in a process started with TRITON_INTERPRET=1 (it must be
    set before triton is imported)."""
    pytest.importorskip("triton")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    cmd += ["-k", "interpreted and not test_kernels_interpreted"]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


@pytest.fixture
def interpreted():
    """spade.roughen.triton_kernels, interpreted (this process runs under TRITON_INTERPRET=1)."""
    from spade.roughen import triton_kernels

    return triton_kernels


@interpreted_only
def test_median_interpreted(interpreted):
    rng = np.random.default_rng(13)
    for ksize, shape in ((3, (2, 9, 11)), (7, (1, 4, 5))):
        img = (rng.integers(0, 4, (*shape, 3)) * 70).astype(np.uint8)
        expected = np.stack([cv2.medianBlur(im, ksize) for im in img])
        assert_same(interpreted.median_blur(t(img), ksize).numpy(), expected)


@interpreted_only
def test_mean_shift_interpreted(interpreted):
    rng = np.random.default_rng(14)
    cases = [
        (rng.integers(0, 256, (9, 10, 3), dtype=np.uint8), 2, 90, 1),
        (blobs(rng, 13, 11), 2.5, 40, 1),
        (blobs(rng, 12, 16), 3, 52, 2),
        (stripes_and_checks(10, 9)[4], 2, 40, 1),
        (np.full((3, 3, 3), 9, np.uint8), 1, 5, 1),
        (blobs(rng, 1, 6), 1.5, 52, 0),
    ]
    for img, sp, sr, level in cases:
        shift = functools.partial(interpreted.mean_shift_pixels, max_iter=rt.MAX_ITER, eps=rt.EPS)
        ours = shift_ours(img, sp, sr, level, shift=shift)
        assert_same(ours, shift_cv2(img, sp, sr, level))


@interpreted_only
def test_mean_shift_division_tie_interpreted(interpreted):
    rows, cols, q = 7, 14, 1  # the smallest: 98 pixels, Σ = 147, 147 · (1/98) < 1.5
    img = np.full((rows + 2, cols + 2, 3), 250, np.uint8)
    yy, xx = np.mgrid[:rows, :cols]
    img[1 : 1 + rows, 1 : 1 + cols] = 0
    img[1 : 1 + rows, 1 : 1 + cols, 0] = q + (yy + xx) % 2
    sp = 7.0  # the boxes of the middle columns hold the whole region: shift just those
    y, x = torch.tensor([4, 4]), torch.tensor([8, 9])
    colours = interpreted.mean_shift_pixels(
        rt.pack(t(img))[None], 0 * y, y, x, sp, 64, max_iter=rt.MAX_ITER, eps=rt.EPS
    )
    expected = shift_cv2(img, sp, 8, 0)[y, x]
    assert (expected[:, 0] == q).any()  # the tie rounded down, where a division rounds up
    assert_same(rt.unpack(colours).numpy().astype(np.uint8), expected)


@interpreted_only
def test_recipe_interpreted(interpreted):
    images = np.stack([render_face(5, i, 32)[8:24, 6:26] for i in range(2)])
    recipe = R(3, 2.0, 52.0, 1, 3)
    assert_same(rt.roughen_torch(images, recipe, triton=True), reference(images, recipe))


# ---------------------------------------------------------------------------------------------
# On a GPU.


@pytest.mark.gpu
def test_device_bit_exact(gpu_device):
    """On CUDA: the Triton kernels at every size; in the CPU smoke run, the small cases."""
    rng = np.random.default_rng(15)
    cases = [
        (np.stack([render_face(6, i, 256) for i in range(8)]), SEED),
        (np.stack([render_face(6, i, 128) for i in range(8)]), SEED),
        (np.stack([render_face(6, i, 64) for i in range(16)]), DEMO),
        (np.stack([render_face(6, i, 64) for i in range(4)]), SEED),
        (np.stack([blobs(rng, 97, 131, 10) for _ in range(4)]), SEED),
        (np.stack([blobs(rng, 256, 256, 12) for _ in range(4)]), SEED),
        (np.stack([blobs(rng, 512, 512, 12) for _ in range(2)]), DEMO),
        (rng.integers(0, 256, (3, 40, 33, 3), dtype=np.uint8), SEED),
        (rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8), R(15, 10.3, 45.5, 2, 15)),
        (np.stack([blobs(rng, 64, 48) for _ in range(4)]), R(5, 6.5, 30.0, 3, 3)),
        (np.stack([blobs(rng, 40, 40) for _ in range(3)]), R(1, 3.0, 20.0, 0, 1)),
    ]
    if gpu_device.type == "cpu":
        cases = [(images, recipe) for images, recipe in cases if images.size <= 64 * 64 * 3 * 4]
    for images, recipe in cases:
        expected = reference(images, recipe)
        assert_same(rt.roughen_torch(images, recipe, gpu_device), expected)
    # Small groups, and the plain-torch path on the GPU (float64 matmuls).
    images, recipe = cases[2] if gpu_device.type == "cuda" else cases[0]
    expected = reference(images, recipe)
    assert_same(rt.roughen_torch(images, recipe, gpu_device, chunk_pixels=5000), expected)
    assert_same(rt.roughen_torch(images[:4], recipe, gpu_device, triton=False), expected[:4])
