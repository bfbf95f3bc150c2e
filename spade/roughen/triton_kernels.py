"""Triton kernels for the two hot loops of `spade.roughen.torch_engine`, bit-exact like it.

`mean_shift_pixels` and `median_blur` have the signatures of their plain-torch counterparts
(`mean_shift_pixels_torch`, `median_blur_torch`) and compute the same bytes; `roughen_torch`
selects them on CUDA. One lane per pixel (per channel value for the median); nothing grows with
the window, so device memory is O(pixels) and `chunk_pixels` is not needed here.

Exactness: integer arithmetic wherever OpenCV's is; the box bounds in float32 and the means as
float64 `sum * (1.0 / count)`, both rounded half to even by `_rne` (floor and an exact
remainder, no libdevice, so the same code runs under TRITON_INTERPRET=1). Kernels are launched
with `enable_fp_fusion=False`: a fused multiply-add would skip the rounding of `sum * inv`.

Run on the CPU with TRITON_INTERPRET=1 set before this module is imported (the tests reload
it under that variable).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK_SHIFT = 128  # lanes (pixels) per mean-shift program
_BLOCK_MEDIAN = 256  # lanes (channel values) per median program
_BIG = 1 << 30


@triton.jit
def _rne(x):
    """Round half to even (float32 or float64 → int32), without libdevice."""
    r = tl.floor(x)
    frac = x - r  # exact: r is x's integer part
    ri = r.to(tl.int32)
    up = (frac > 0.5) | ((frac == 0.5) & ((ri & 1) == 1))
    return ri + up.to(tl.int32)


# Sizes are not specialised on (divisibility by 16 buys nothing for these gathers): one compiled
# variant per kernel, whatever the image size, batch or pixel count.
@triton.jit(do_not_specialize=["n_pix", "H", "W", "isr2"])
def _mean_shift_kernel(
    src_ptr,  # (N, H, W) int32 packed colours c0 | c1 << 8 | c2 << 16
    pix_ptr,  # (P,) int32 flat pixel indices (b * H + y) * W + x
    out_ptr,  # (P,) int32 packed final colours
    n_pix,
    H,
    W,
    sp,  # float32 spatial radius of this level
    isr2,  # int colour threshold
    MAX_ITER: tl.constexpr,
    EPS: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = lanes < n_pix
    p = tl.load(pix_ptr + lanes, mask=valid, other=0)
    base = (p // (H * W)) * (H * W)
    y0 = (p - base) // W
    x0 = (p - base) % W
    c = tl.load(src_ptr + p, mask=valid, other=0)
    c0 = c & 255
    c1 = (c >> 8) & 255
    c2 = c >> 16
    active = valid
    for _ in range(MAX_ITER):
        # The box, as OpenCV rounds it: float32 centre ± sp, half to even, clamped.
        x0f = x0.to(tl.float32)
        y0f = y0.to(tl.float32)
        minx = tl.maximum(_rne(x0f - sp), 0)
        maxx = tl.minimum(_rne(x0f + sp), W - 1)
        miny = tl.maximum(_rne(y0f - sp), 0)
        maxy = tl.minimum(_rne(y0f + sp), H - 1)
        # Offsets that any active lane needs (an empty range once every lane has stopped).
        dy_lo = tl.min(tl.where(active, miny - y0, BIG), 0)
        dy_hi = tl.max(tl.where(active, maxy - y0, -BIG), 0)
        dx_lo = tl.min(tl.where(active, minx - x0, BIG), 0)
        dx_hi = tl.max(tl.where(active, maxx - x0, -BIG), 0)
        count = tl.zeros_like(x0)
        sx = tl.zeros_like(x0)
        sy = tl.zeros_like(x0)
        s0 = tl.zeros_like(x0)
        s1 = tl.zeros_like(x0)
        s2 = tl.zeros_like(x0)
        for dy in range(dy_lo, dy_hi + 1):
            y = y0 + dy
            row_ok = active & (y >= miny) & (y <= maxy)
            row = src_ptr + base + y * W
            for dx in range(dx_lo, dx_hi + 1):
                x = x0 + dx
                ok = row_ok & (x >= minx) & (x <= maxx)
                v = tl.load(row + x, mask=ok, other=0)
                v0 = v & 255
                v1 = (v >> 8) & 255
                v2 = v >> 16
                d = (v0 - c0) * (v0 - c0) + (v1 - c1) * (v1 - c1) + (v2 - c2) * (v2 - c2)
                hit = (ok & (d <= isr2)).to(tl.int32)
                count += hit
                sx += x * hit
                sy += y * hit
                s0 += v0 * hit
                s1 += v1 * hit
                s2 += v2 * hit
        found = active & (count > 0)
        inv = 1.0 / tl.where(found, count, 1).to(tl.float64)  # reciprocal, then multiply
        x1 = _rne(sx.to(tl.float64) * inv)
        y1 = _rne(sy.to(tl.float64) * inv)
        n0 = _rne(s0.to(tl.float64) * inv)
        n1 = _rne(s1.to(tl.float64) * inv)
        n2 = _rne(s2.to(tl.float64) * inv)
        moved = tl.abs(x1 - x0) + tl.abs(y1 - y0)
        moved += (n0 - c0) * (n0 - c0) + (n1 - c1) * (n1 - c1) + (n2 - c2) * (n2 - c2)
        done = ((x1 == x0) & (y1 == y0)) | (moved <= EPS)
        x0 = tl.where(found, x1, x0)
        y0 = tl.where(found, y1, y0)
        c0 = tl.where(found, n0, c0)
        c1 = tl.where(found, n1, c1)
        c2 = tl.where(found, n2, c2)
        active = found & ~done
    tl.store(out_ptr + lanes, c0 | (c1 << 8) | (c2 << 16), mask=valid)


@triton.jit(do_not_specialize=["total", "H", "W", "C", "R"])
def _median_kernel(
    src_ptr,  # (N, H, W, C) uint8
    out_ptr,
    total,  # N * H * W * C
    H,
    W,
    C,
    R,  # ksize // 2
    BLOCK: tl.constexpr,
):
    """Element k²//2 of the sorted (2R+1)² window (BORDER_REPLICATE), by a bitwise search: the
    largest t with #{v < t} <= k²//2, decided one bit at a time from the top."""
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = lanes < total
    ch = lanes % C
    pix = lanes // C
    x = pix % W
    y = (pix // W) % H
    img = pix // (W * H)
    rank = 2 * R * (R + 1)  # ((2R+1)² - 1) / 2
    t = tl.zeros_like(lanes)
    for bit in tl.static_range(7, -1, -1):
        cand = t | (1 << bit)
        below = tl.zeros_like(lanes)
        for dy in range(-R, R + 1):
            yy = tl.minimum(tl.maximum(y + dy, 0), H - 1)
            row = src_ptr + (img * H + yy) * (W * C) + ch
            for dx in range(-R, R + 1):
                xx = tl.minimum(tl.maximum(x + dx, 0), W - 1)
                v = tl.load(row + xx * C, mask=valid, other=0).to(tl.int32)
                below += (v < cand).to(tl.int32)
        t = tl.where(below <= rank, cand, t)
    tl.store(out_ptr + lanes, t.to(tl.uint8), mask=valid)


def _block(n: int, default: int) -> int:
    """Lanes per program. Interpreted, one wide program is much faster than many (each op is a
    numpy call over the lanes); lanes are independent, so the result is the same."""
    if triton.knobs.runtime.interpret:
        return min(1 << 14, max(16, triton.next_power_of_2(n)))
    return default


def _check_size(t: torch.Tensor) -> None:
    if t.numel() >= 1 << 31:
        raise ValueError(f"tensor too large for int32 indexing: {tuple(t.shape)}")


def mean_shift_pixels(
    src: torch.Tensor,
    b: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    sp: float,
    isr2: int,
    chunk_pixels: int = 0,
    *,
    max_iter: int,
    eps: int,
) -> torch.Tensor:
    """Triton `mean_shift_pixels_torch`: final packed colours (P,) of the listed pixels, with
    OpenCV's termination criteria (`max_iter` iterations, `eps`) passed in.

    Sums are int32: exact while H·W·max(H, W) < 2^31 (any image up to 1024²)."""
    del chunk_pixels  # nothing here grows with the window
    _, h, w = src.shape
    _check_size(src)
    if h * w * max(h, w) >= 1 << 31:
        raise ValueError(f"image too large for int32 sums: {h}×{w}")
    src = src.contiguous()
    pix = ((b * h + y) * w + x).to(torch.int32)
    out = torch.empty_like(pix)
    block = _block(len(pix), _BLOCK_SHIFT)
    grid = (triton.cdiv(len(pix), block),)
    _mean_shift_kernel[grid](
        src,
        pix,
        out,
        len(pix),
        h,
        w,
        sp,
        min(isr2, 1 << 30),
        MAX_ITER=max_iter,
        EPS=eps,
        BIG=_BIG,
        BLOCK=block,
        num_warps=4,
        enable_fp_fusion=False,
    )
    return out


def median_blur(img: torch.Tensor, ksize: int, chunk_pixels: int = 0) -> torch.Tensor:
    """Triton `median_blur_torch`: cv2.medianBlur on (N, H, W, C) uint8."""
    del chunk_pixels
    if ksize == 1:
        return img.clone()
    _check_size(img)
    img = img.contiguous()
    out = torch.empty_like(img)
    _, h, w, c = img.shape
    block = _block(img.numel(), _BLOCK_MEDIAN)
    grid = (triton.cdiv(img.numel(), block),)
    _median_kernel[grid](img, out, img.numel(), h, w, c, ksize // 2, BLOCK=block)
    return out
