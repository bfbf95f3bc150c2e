"""The rough recipe in torch, batched on any device, bit-exact with OpenCV 4.14.

    RGB2HSV → medianBlur(median_before) → pyrMeanShiftFiltering(sp, sr, maxLevel)
    → medianBlur(median_after) → HSV2RGB

`roughen_torch(images, recipe, device)` returns the same bytes as `roughen_image` (five OpenCV
calls) applied to each image. Each step below is a small exact port, testable on its own
against the OpenCV function it replaces; the rules they follow are those OpenCV's code
computes (integer arithmetic, float32 box bounds, a float64 reciprocal, rounding half to even),
which are not always those its documentation describes.

HSV→RGB is `spade.roughen.hsv.hsv_to_rgb` on the CPU, the one definition every engine shares
(OpenCV's own depends on the CPU's SIMD width).

Memory, whatever the batch size: images go to the device in groups of at most `chunk_pixels`
pixels (at least one image). Per group, the per-pixel tensors (RGB, HSV, the pyramid, packed
colours, the list of pixels to shift) peak at about 60 bytes per pixel, i.e. ~250 MiB at the
default 2^22. The plain-torch path also materialises windows: median windows for at most
`chunk_pixels` (pixel, offset) pairs (at least one image row), mean-shift boxes for at most
max(chunk_pixels, MIN_GATHER · box area) pairs at ~50 bytes each (float planes, distances,
matches). The Triton kernels materialise no window: nothing beyond the per-pixel tensors.
So peak device memory is O(chunk_pixels): ~250 MiB (Triton) to ~500 MiB (plain torch) at the
default, plus the allocator's slack; the bench reports measured peaks.

On CUDA with Triton available, the two hot loops (the per-pixel mean shift and the median
order statistic) run as Triton kernels (`spade.roughen.triton_kernels`); everywhere else, and as the
reference, the plain-torch functions below run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from spade.roughen.hsv import hsv_to_rgb

MAX_ITER = 5  # cv2.pyrMeanShiftFiltering's default TermCriteria(MAX_ITER + EPS, 5, 1.0)
EPS = 1
MIN_MASK_DIST = 16  # the coarse-to-fine mask uses max(isr2, 16)
MAX_DIST = 3 * 255 * 255  # the largest squared colour distance
DEFAULT_CHUNK_PIXELS = 1 << 22
MIN_GATHER = 64  # pixels per mean-shift gather, whatever chunk_pixels says
CPU_WINDOW_PAIRS = 1 << 18  # window pieces on the CPU: cache-sized is faster (no page faults)


class RecipeLike(Protocol):
    median_before: int
    spatial_radius: float
    color_radius: float
    max_level: int
    median_after: int


# ---------------------------------------------------------------------------------------------
# RGB → HSV (8U, hue in 0..179): integer only, identical on every CPU.


def _hsv_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """sdiv[i] = round((255 << 12) / i), hdiv[i] = round((180 << 12) / (6 i)), [0] = 0."""
    i = np.arange(256, dtype=np.float64)
    i[0] = 1.0
    sdiv = np.rint((255 << 12) / i)
    hdiv = np.rint((180 << 12) / (6 * i))
    sdiv[0] = hdiv[0] = 0
    as_t = lambda a: torch.from_numpy(a.astype(np.int32)).to(device)  # noqa: E731
    return as_t(sdiv), as_t(hdiv)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV) on a (..., 3) uint8 tensor."""
    sdiv, hdiv = _hsv_tables(rgb.device)
    r, g, b = rgb.to(torch.int32).unbind(-1)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    s = (diff * sdiv[v] + 2048) >> 12
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + 2048) >> 12  # arithmetic shift: floor for a negative h
    h = torch.where(h < 0, h + 180, h)
    return torch.stack((h, s, v), -1).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# medianBlur: an exact order statistic (element k²//2 of the sorted window), BORDER_REPLICATE,
# each channel on its own.


def _chunks(total: int, per_chunk: int) -> Iterator[slice]:
    step = max(1, per_chunk)
    for start in range(0, total, step):
        yield slice(start, min(total, start + step))


def _replicate_pad(img: torch.Tensor, r: int) -> torch.Tensor:
    """Pad (N, H, W, C) by r on each side of H and W, clamping indices (BORDER_REPLICATE)."""
    _, h, w, _ = img.shape
    rows = (torch.arange(h + 2 * r, device=img.device) - r).clamp_(0, h - 1)
    cols = (torch.arange(w + 2 * r, device=img.device) - r).clamp_(0, w - 1)
    return img[:, rows][:, :, cols]


def _window_pairs(device: torch.device, chunk_pixels: int) -> int:
    """How many (pixel, window offset) pairs to materialise at once."""
    return min(chunk_pixels, CPU_WINDOW_PAIRS) if device.type == "cpu" else chunk_pixels


def median_blur_torch(
    img: torch.Tensor, ksize: int, chunk_pixels: int = DEFAULT_CHUNK_PIXELS
) -> torch.Tensor:
    """cv2.medianBlur(img, ksize) on (N, H, W, C) uint8, in plain torch.

    Windows are unfolded for at most `chunk_pixels` (pixel, offset) pairs at a time."""
    if ksize == 1:
        return img.clone()
    n, h, w, c = img.shape
    r = ksize // 2
    padded = _replicate_pad(img, r)
    out = torch.empty_like(img)
    rows_per_chunk = _window_pairs(img.device, chunk_pixels) // (w * c * ksize * ksize)
    for i in range(n):
        for rows in _chunks(h, rows_per_chunk):
            band = padded[i, rows.start : rows.stop + 2 * r]
            win = band.unfold(0, ksize, 1).unfold(1, ksize, 1)  # (rows, W, C, k, k)
            flat = win.reshape(*win.shape[:3], ksize * ksize)
            # k² is odd, so torch.median's lower median is the middle element.
            out[i, rows] = flat.median(-1).values
    return out


# ---------------------------------------------------------------------------------------------
# pyrDown / pyrUp: integer 5-tap kernels, rounded by shifts.

_KERNEL = (1, 4, 6, 4, 1)


def reflect101(idx: torch.Tensor, n: int) -> torch.Tensor:
    """OpenCV's borderInterpolate(idx, n, BORDER_REFLECT_101), repeated until in range."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def pyr_down(img: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown on (N, H, W, C) uint8: 5×5 binomial, BORDER_REFLECT_101, (sum + 128) >> 8,
    size ((H + 1) // 2, (W + 1) // 2)."""
    _, h, w, _ = img.shape
    dev = img.device
    taps = torch.arange(-2, 3, device=dev)
    k = torch.tensor(_KERNEL, dtype=torch.int32, device=dev)
    cols = reflect101(2 * torch.arange((w + 1) // 2, device=dev)[:, None] + taps, w)  # (w2, 5)
    rows = reflect101(2 * torch.arange((h + 1) // 2, device=dev)[:, None] + taps, h)
    x = img.to(torch.int32)
    x = (x[:, :, cols] * k[:, None]).sum(3)  # (N, H, w2, C)
    x = (x[:, rows] * k[:, None, None]).sum(2)  # (N, h2, w2, C)
    return ((x + 128) >> 8).to(torch.uint8)


def _pyr_up_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One pyrUp pass along `dim`, unnormalised: even 2i ← x[i-1] + 6x[i] + x[i+1],
    odd 2i+1 ← 4(x[i] + x[i+1]), with x[-1] := x[1] and x[n] := x[n-1]."""
    n = x.shape[dim]
    dev = x.device
    i = torch.arange(n, device=dev)
    left = torch.where(i == 0, min(1, n - 1), i - 1)
    right = (i + 1).clamp_(max=n - 1)
    xl, xr = x.index_select(dim, left), x.index_select(dim, right)
    even = xl + 6 * x + xr
    odd = 4 * (x + xr)
    return torch.stack((even, odd), dim + 1).flatten(dim, dim + 1)


def pyr_up(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.pyrUp(img, dstsize=(W, H)) on (N, h, w, C) uint8 for size = (H, W), H in {2h-1, 2h}."""
    height, width = size
    x = _pyr_up_axis(_pyr_up_axis(img.to(torch.int32), 2), 1)
    return ((x[:, :height, :width] + 32) >> 6).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# Mean shift, one level.


def level_radius(sp: float, level: int) -> float:
    """The spatial radius at a pyramid level: float32(sp / 2^level), at least 1."""
    return float(max(np.float32(sp / (1 << level)), np.float32(1.0)))


def color_threshold(sr: float) -> int:
    """isr2 = round(sr²), compared with `dist <= isr2` (squared distances are integers)."""
    return int(np.rint(np.float64(sr) * np.float64(sr)))


def pack(img: torch.Tensor) -> torch.Tensor:
    """(..., 3) uint8 → (...) int32 c0 | c1 << 8 | c2 << 16 (one gather per box pixel)."""
    x = img.to(torch.int32)
    return x[..., 0] | (x[..., 1] << 8) | (x[..., 2] << 16)


def unpack(p: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack`, as int32 (..., 3)."""
    return torch.stack((p & 255, (p >> 8) & 255, p >> 16), -1)


def rne(x: torch.Tensor) -> torch.Tensor:
    """Round half to even to int64, like OpenCV's cvRound (torch.round does the same, but is
    far slower on the CPU)."""
    r = torch.floor(x)
    frac = x - r  # exact
    up = (frac > 0.5) | ((frac == 0.5) & (r.remainder(2) == 1))
    return r.to(torch.int64) + up


def _box(pos: torch.Tensor, sp: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[max(rne(f32(pos) - sp), 0), min(rne(f32(pos) + sp), size - 1)]: the box bounds, with
    float32 arithmetic and rounding half to even (asymmetric for half-integer sp)."""
    p = pos.to(torch.float32)
    spf = torch.tensor(sp, dtype=torch.float32, device=pos.device)
    lo = rne(p - spf).clamp_(min=0)
    hi = rne(p + spf).clamp_(max=size - 1)
    return lo, hi


def _planes(src: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W) packed → (N, 4, H, W) planes c0, c1, c2, |c|² as `dtype`.

    A window of these planes gives by one batched matrix product every colour distance
    (|v|² - 2 v·c + |c|²), and by another the colour sums Σc of the matching pixels."""
    c = unpack(src).to(dtype)
    return torch.cat((c, (c * c).sum(-1, keepdim=True)), -1).permute(0, 3, 1, 2).contiguous()


def _exact_dtype(device: torch.device, kh: int, kw: int) -> torch.dtype:
    """float32 on the CPU where every value is an integer below 2^24 (exact): distances are at
    most 3·255² (with isr2 clamped to that), sums at most kh·kw·max(255, kh, kw). float64 for
    huge windows, and on other devices (where float32 matmuls may silently use TF32)."""
    fits = kh * kw * max(255, kh, kw) < 1 << 24
    return torch.float32 if device.type == "cpu" and fits else torch.float64


@contextmanager
def _ieee_matmul() -> Iterator[None]:
    """Full-precision float32 CPU matmuls (torch.set_float32_matmul_precision("medium") would
    let oneDNN use bf16), restored afterwards."""
    backend = torch.backends.mkldnn.matmul
    old = backend.fp32_precision
    backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        backend.fp32_precision = old


def _window_start(pos: torch.Tensor, r: int, k: int, size: int) -> torch.Tensor:
    """Start of a k-wide window inside [0, size) that holds [pos - r, pos + r] ∩ [0, size)."""
    return (pos - r).clamp_(min=0).clamp_(max=size - k)


def _shift_step(
    windows: torch.Tensor,
    b: torch.Tensor,
    y0: torch.Tensor,
    x0: torch.Tensor,
    c: torch.Tensor,
    sp: float,
    isr2: int,
) -> tuple[torch.Tensor, ...]:
    """One mean-shift iteration for P pixels: the mean position and colour of the pixels in the
    box around (y0, x0) whose colour is within isr2 of c.

    windows: `_planes(src)` unfolded to (N, 4, H-kh+1, W-kw+1, kh, kw); b, y0, x0: (P,) int64;
    c: (P, 3) int32. Returns count (P,) float and y1, x1 (P,) int64, s (P, 3) int32
    (meaningless where count == 0). Every float value is an exact integer (see _exact_dtype)."""
    kh, kw = windows.shape[-2:]
    h, w = windows.shape[2] + kh - 1, windows.shape[3] + kw - 1
    dev, dtype = b.device, windows.dtype
    r = math.ceil(sp)  # the box always lies within ±ceil(sp) of its centre
    wy, wx = _window_start(y0, r, kh, h), _window_start(x0, r, kw, w)
    ylo, yhi = _box(y0, sp, h)
    xlo, xhi = _box(x0, sp, w)
    iy = wy[:, None] + torch.arange(kh, device=dev)  # (P, kh) rows of the window
    ix = wx[:, None] + torch.arange(kw, device=dev)
    in_rows = ((iy >= ylo[:, None]) & (iy <= yhi[:, None])).to(dtype)
    in_cols = ((ix >= xlo[:, None]) & (ix <= xhi[:, None])).to(dtype)
    g = windows.permute(0, 2, 3, 1, 4, 5)[b, wy, wx].flatten(2)  # (P, 4, kh*kw)
    cf = c.to(dtype)
    coef = torch.cat((-2 * cf, torch.ones_like(cf[:, :1])), 1)
    lhs = torch.bmm(coef[:, None, :], g)[:, 0]  # |v|² - 2 v·c, (P, kh*kw)
    m = (lhs <= (isr2 - (cf * cf).sum(1))[:, None]).to(dtype).view(-1, kh, kw)
    m.mul_(in_rows[:, :, None]).mul_(in_cols[:, None, :])  # inside the box
    m = m.view(-1, kh * kw)
    c_sum = torch.bmm(g[:, :3], m[:, :, None])[:, :, 0].to(torch.float64)
    # Window-relative (column, row, 1) of every window offset: one plain matmul for all P.
    jj, ii = torch.meshgrid(
        torch.arange(kw, device=dev, dtype=dtype),
        torch.arange(kh, device=dev, dtype=dtype),
        indexing="xy",
    )
    rel = torch.stack((jj.flatten(), ii.flatten(), torch.ones_like(jj).flatten()), 1)
    x_rel, y_rel, count = (m @ rel).to(torch.float64).unbind(1)
    inv = 1.0 / count  # float64 reciprocal, then multiply (not a division)
    s = rne(c_sum * inv[:, None]).to(torch.int32)
    x1 = rne((x_rel + wx * count) * inv)
    y1 = rne((y_rel + wy * count) * inv)
    return count, y1, x1, s


def mean_shift_pixels_torch(
    src: torch.Tensor,
    b: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    sp: float,
    isr2: int,
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
) -> torch.Tensor:
    """Mean-shift the listed pixels of `src` ((N, H, W) packed int32), each starting at its own
    position and colour; returns their final packed colours (P,).

    Up to MAX_ITER iterations; a pixel stops when its position does not move, or when
    |dx| + |dy| + |colour change|² <= EPS, or when its box holds no pixel within isr2 (then
    it keeps its colour). Converged pixels leave the active set; windows are gathered for at
    most `chunk_pixels` (pixel, offset) pairs at a time."""
    _, h, w = src.shape
    r = math.ceil(sp)
    kh, kw = min(2 * r + 1, h), min(2 * r + 1, w)
    dtype = _exact_dtype(src.device, kh, kw)
    windows = _planes(src, dtype).unfold(2, kh, 1).unfold(3, kw, 1)
    y, x = y.clone(), x.clone()
    c = unpack(src[b, y, x])
    active = torch.arange(len(b), device=src.device)
    per_chunk = max(MIN_GATHER, _window_pairs(src.device, chunk_pixels) // (kh * kw))
    for _ in range(MAX_ITER):
        still = []
        for part in _chunks(len(active), per_chunk):
            idx = active[part]
            y0, x0, c0 = y[idx], x[idx], c[idx]
            with _ieee_matmul():
                count, y1, x1, s = _shift_step(windows, b[idx], y0, x0, c0, sp, isr2)
            found = count > 0
            moved = (y1 - y0).abs() + (x1 - x0).abs() + ((s - c0) ** 2).sum(-1)
            done = ~found | ((y1 == y0) & (x1 == x0)) | (moved <= EPS)
            y[idx] = torch.where(found, y1, y0)
            x[idx] = torch.where(found, x1, x0)
            c[idx] = torch.where(found[:, None], s, c0)
            still.append(idx[~done])
        active = torch.cat(still)
        if len(active) == 0:
            break
    return pack(c)


# ---------------------------------------------------------------------------------------------
# The coarse-to-fine mask and the whole filter.


def refine_mask(coarse: torch.Tensor, isr2: int, size: tuple[int, int]) -> torch.Tensor:
    """Fine pixels (N, H, W) bool to recompute after pyrUp of the coarse result (N, h, w, 3).

    For every interior coarse pixel (i, j) whose colour is at squared distance >=
    max(isr2, 16) from any of its 8 neighbours, fine pixel (2i + 1, 2j - 1) is marked (that
    offset is OpenCV's); the marks are then dilated by a 3×3 box."""
    n, h, w, _ = coarse.shape
    height, width = size
    mask = torch.zeros((n, height, width), dtype=torch.bool, device=coarse.device)
    if h < 3 or w < 3:
        return mask
    x = coarse.to(torch.int32)
    centre = x[:, 1:-1, 1:-1]
    edge = torch.zeros(centre.shape[:3], dtype=torch.bool, device=coarse.device)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = x[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
                edge |= ((nb - centre) ** 2).sum(-1) >= max(isr2, MIN_MASK_DIST)
    mask[:, 3 : 2 * h - 2 : 2, 1 : 2 * w - 4 : 2] = edge
    dilated = F.max_pool2d(mask[:, None].to(torch.float32), 3, stride=1, padding=1)
    return dilated[:, 0] > 0


MeanShiftFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int, int], torch.Tensor
]


def mean_shift_filter(
    hsv: torch.Tensor,
    sp: float,
    sr: float,
    max_level: int,
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
    shift: MeanShiftFn = mean_shift_pixels_torch,
) -> torch.Tensor:
    """cv2.pyrMeanShiftFiltering(hsv, sp, sr, maxLevel=max_level) on (N, H, W, 3) uint8.

    Pyramid of sources by repeated pyrDown; the top level is mean-shifted at every pixel;
    each finer level starts from pyrUp of the coarser result and recomputes, on its own
    source, only the pixels `refine_mask` marks."""
    isr2 = min(color_threshold(sr), MAX_DIST + 1)  # the same tests, in small integers
    sources = [hsv]
    for _ in range(max_level):
        sources.append(pyr_down(sources[-1]))
    result: torch.Tensor | None = None
    for level in range(max_level, -1, -1):
        src = sources[level]
        n, h, w, _ = src.shape
        if result is None:
            todo = torch.ones((n, h, w), dtype=torch.bool, device=src.device)
            dst = src.clone()
        else:
            todo = refine_mask(result, isr2, (h, w))
            dst = pyr_up(result, (h, w))
        b, y, x = todo.nonzero(as_tuple=True)
        if len(b):
            packed = pack(src)
            colours = shift(packed, b, y, x, level_radius(sp, level), isr2, chunk_pixels)
            dst[b, y, x] = unpack(colours).to(torch.uint8)
        result = dst
    assert result is not None
    return result


# ---------------------------------------------------------------------------------------------
# The recipe.


def _use_triton(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def roughen_hsv(
    rgb: torch.Tensor,
    recipe: RecipeLike,
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
    *,
    triton: bool | None = None,
) -> torch.Tensor:
    """Everything before HSV→RGB, on rgb's device: (N, H, W, 3) uint8 RGB → HSV roughs.

    triton=None picks the Triton kernels on CUDA; True forces them (e.g. on the CPU under
    TRITON_INTERPRET=1), False forces plain torch."""
    if triton is None:
        triton = _use_triton(rgb.device)
    if triton:
        from spade.roughen import triton_kernels as kernels

        median = kernels.median_blur
        shift = functools.partial(kernels.mean_shift_pixels, max_iter=MAX_ITER, eps=EPS)
    else:
        median, shift = median_blur_torch, mean_shift_pixels_torch
    hsv = median(rgb_to_hsv(rgb), recipe.median_before, chunk_pixels)
    hsv = mean_shift_filter(
        hsv, recipe.spatial_radius, recipe.color_radius, recipe.max_level, chunk_pixels, shift
    )
    return median(hsv, recipe.median_after, chunk_pixels)


def _check(images: np.ndarray, recipe: RecipeLike) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) RGB, got {images.dtype} {images.shape}")
    if min(images.shape[:3]) < 1:
        raise ValueError(f"empty batch or image: {images.shape}")
    for name in ("median_before", "median_after"):
        k = getattr(recipe, name)
        if not (isinstance(k, int | np.integer) and k >= 1 and k % 2 == 1):
            raise ValueError(f"{name} must be an odd int >= 1, got {k!r}")
    if not 0 < recipe.spatial_radius < math.inf:
        raise ValueError(f"spatial_radius must be > 0 and finite, got {recipe.spatial_radius}")
    if not 0 < recipe.color_radius < 46340:  # OpenCV's int round(sr²) overflows beyond
        raise ValueError(f"color_radius must be in (0, 46340), got {recipe.color_radius}")
    if not 0 <= recipe.max_level <= 8:
        raise ValueError(f"max_level must be in 0..8, got {recipe.max_level}")


def roughen_torch(
    images: np.ndarray,
    recipe: RecipeLike,
    device: torch.device | str = "cpu",
    *,
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
    triton: bool | None = None,
) -> np.ndarray:
    """Roughen uint8 (N, H, W, 3) RGB images on `device`; the bytes of
    np.stack([roughen_image(im, recipe) for im in images]).

    Images go to the device in groups of at most `chunk_pixels` pixels (at least one image);
    see the module docstring for the memory bound."""
    _check(images, recipe)
    device = torch.device(device)
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    with torch.inference_mode():
        for group in _chunks(n, chunk_pixels // (h * w)):
            rgb = torch.from_numpy(np.ascontiguousarray(images[group])).to(device)
            hsv = roughen_hsv(rgb, recipe, chunk_pixels, triton=triton)
            out[group] = hsv_to_rgb(hsv.cpu().numpy())
    return out
