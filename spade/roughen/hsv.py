"""HSV→RGB for 8-bit images (OpenCV's hue range 0..179), the same bytes on every CPU.

OpenCV's `cvtColor(hsv, COLOR_HSV2RGB)` depends on the CPU it runs on: each row is converted in
SIMD blocks (16 px with SSE, 32 with AVX2, 64 with AVX-512) that truncate, and the rest of the
row in scalar code that rounds half to even; AVX2 and AVX-512 builds also fuse `1 - s·h` into
one multiply-add, SSE builds do not. So the same rough came out one level apart on two machines.

`hsv_to_rgb` is the arithmetic of OpenCV's x86 SIMD path (AVX2 and AVX-512), for every pixel of
every width: float32 operations, which NumPy rounds the same way on every CPU, truncation to
8 bits, and the fused multiply-add computed exactly (`s·h` of two float32 is exact in float64)
and rounded to float32. It equals OpenCV on 64-px-multiple rows on any AVX2 or AVX-512 CPU
(the roughs of the demo, whose hashes are committed), and on all 180·256·256 triples
(tests/test_roughen.py).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
HSV_TO_RGB_VERSION = 2  # part of the roughen cache key (1: OpenCV's own, CPU-dependent)
# The `tab` entry (v, v(1-s), v(1-s·f), v(1-s(1-f))) that gives B, G and R in each hue sector.
_SECTOR_BGR = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])


def _fused_one_minus(s: np.ndarray, x: np.ndarray) -> np.ndarray:
    """float32(1 - s·x) rounded once, as a fused multiply-add computes it."""
    return (1.0 - s.astype(np.float64) * x.astype(np.float64)).astype(F32)


def _convert(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """1-D uint8-valued h, s, v → (n, 3) uint8 RGB, in OpenCV's SIMD arithmetic."""
    s = s.astype(F32) * F32(1 / 255)
    v = v.astype(F32) * F32(1 / 255)
    h = h.astype(F32) * F32(6 / 180)
    sector = np.trunc(h)
    frac = h - sector
    sector = sector - np.trunc(sector * F32(1 / 6)) * F32(6)
    tabs = np.stack(
        [v, v * (F32(1) - s), v * _fused_one_minus(s, frac), v * _fused_one_minus(s, 1 - frac)],
        axis=1,
    )
    bgr = np.take_along_axis(tabs, _SECTOR_BGR[sector.astype(np.intp)], axis=1)
    return (bgr[:, ::-1] * F32(255)).astype(np.uint8)  # truncation, as the SIMD path


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) HSV → uint8 (..., 3) RGB. Each distinct colour is converted once (a rough
    holds a few hundred), so a 256-px rough costs milliseconds."""
    if hsv.dtype != np.uint8 or hsv.shape[-1:] != (3,):
        raise ValueError(f"expected uint8 (..., 3) HSV, got {hsv.dtype} {hsv.shape}")
    packed = (hsv[..., 0].astype(np.int32) << 16) | (hsv[..., 1].astype(np.int32) << 8)
    packed |= hsv[..., 2]
    colours, where = np.unique(packed.ravel(), return_inverse=True)
    rgb = _convert(colours >> 16, (colours >> 8) & 255, colours & 255)
    return rgb[where].reshape(hsv.shape)
