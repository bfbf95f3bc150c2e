"""Image decoding, resizing, packed storage and grids.

Every image in the pipeline is RGB uint8, HWC. Decoding is strict: a truncated or otherwise broken
file raises `UnreadableImage` instead of yielding a half-grey picture.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from spade.errors import UserError
from spade.files import write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class UnreadableImage(Exception):
    """The bytes are not a decodable image (corrupt, truncated, or not an image at all)."""


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode any common image to RGB uint8.

    Transparency is composited on white, grayscale becomes gray RGB, palettes are expanded,
    16-bit channels are scaled (not clipped) to 8 bits, and EXIF orientation is applied.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
            img = ImageOps.exif_transpose(img)
    except Exception as e:  # PIL raises many types for broken input
        raise UnreadableImage(f"{type(e).__name__}: {e}") from e
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        # 16-bit modes are 0..65535; 32-bit "I" PNGs often hold 8-bit values, so guess there.
        wide = img.mode != "I" or arr.max(initial=0) > 255
        scale = 65535.0 if wide else 255.0
        gray = np.clip(np.rint(arr * (255.0 / scale)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.rint(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA")).astype(np.float32)
        alpha = rgba[:, :, 3:] / 255.0
        rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy


def read_rgb(path: Path | str) -> np.ndarray:
    """Read an image file as RGB uint8, with a `UserError` that names the file on failure."""
    path = Path(path)
    try:
        return decode_rgb(path.read_bytes())
    except FileNotFoundError as e:
        raise UserError(f"image not found: {path}") from e
    except UnreadableImage as e:
        raise UserError(f"cannot read image {path}: {e}") from e


def center_square(img: np.ndarray) -> np.ndarray:
    """Crop the largest centred square."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top : top + s, left : left + s]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to `size` (area interpolation; cubic when enlarging)."""
    img = center_square(img)
    if img.shape[0] == size:
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


# --------------------------------------------------------------------------- storage


def open_image_array(path: Path | str, shape: tuple[int, ...]) -> np.memmap:
    """Create an (N, H, W, 3) uint8 .npy file to be filled in place."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)


def load_image_array(path: Path | str) -> np.ndarray:
    """Memory-map a packed (N, H, W, 3) uint8 image array written by the pipeline."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro` to build the pipeline's data first")
    arr = np.load(path, mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise UserError(f"{path}: expected uint8 (N, H, W, 3) images, got {arr.dtype} {arr.shape}")
    return arr


def png_bytes(img: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG bytes (deterministic)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"could not encode an image of shape {img.shape} as PNG")
    return buf.tobytes()


def save_png(path: Path | str, img: np.ndarray) -> None:
    write_bytes(path, png_bytes(img))


def make_grid(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Lay out equal-length image batches side by side: row i is (col_0[i], col_1[i], …)."""
    n, h, w, _ = columns[0].shape
    k = len(columns)
    grid = np.full((n * (h + pad) + pad, k * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for c, images in enumerate(columns):
        for r in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = images[r]
    return grid


def comparison_grid(
    roughs: np.ndarray, generated: np.ndarray, real: np.ndarray, rows: int
) -> np.ndarray:
    """The first `rows` examples as rows of rough | generated | real."""
    rows = min(rows, len(roughs))
    return make_grid([roughs[:rows], generated[:rows], real[:rows]])


def export_pngs(array_path: Path | str, out_dir: Path | str, limit: int | None = None) -> int:
    """Write the images of a packed .npy array as numbered PNG files; returns how many."""
    images = load_image_array(array_path)
    out_dir = Path(out_dir)
    n = len(images) if limit is None else min(limit, len(images))
    width = max(6, len(str(n)))
    for i in range(n):
        save_png(out_dir / f"{i:0{width}d}.png", images[i])
    return n
