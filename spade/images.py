"""Image decoding, resizing, packed storage and grids: what the stages share.

Every image in the pipeline is RGB uint8, HWC. Decoding is strict: a truncated or otherwise broken
file raises `UnreadableImage` instead of yielding a half-grey picture. Reading and writing single
image files for the command line is `spade.image_files`: editing it reruns no stage.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spade.errors import UserError

# The only formats decoded (Pillow's names), whatever a file's name or an upload's type says: no
# other plugin ever sees the bytes (Pillow's EPS plugin, for one, runs Ghostscript on them).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
FORMATS_SHOWN = "PNG, JPEG, WebP, GIF, BMP, TIFF"
# No image of this project is anywhere near this; a bigger file is refused unread (zip bombs,
# /dev/zero).
MAX_IMAGE_BYTES = 64 * 2**20


class UnreadableImage(Exception):
    """The bytes are not a decodable image (corrupt, truncated, or not an image at all)."""


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode an image of one of `IMAGE_FORMATS` to RGB uint8.

    Transparency is composited on white, grayscale becomes gray RGB, palettes are expanded,
    16-bit channels are scaled (not clipped) to 8 bits, and EXIF orientation is applied.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
    except UnidentifiedImageError:
        raise UnreadableImage(f"not an image of a known format ({FORMATS_SHOWN})") from None
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
        return _on_white(np.asarray(img if img.mode == "RGBA" else img.convert("RGBA")))
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy


def _on_white(rgba: np.ndarray, rows: int = 256) -> np.ndarray:
    """RGBA → RGB on white, round((c·a + 255·(255 − a)) / 255) exactly, in integers and a few
    rows at a time: a 4096² picture costs its output, not a float copy of it."""
    out = np.empty((*rgba.shape[:2], 3), np.uint8)
    for top in range(0, rgba.shape[0], rows):
        block = rgba[top : top + rows].astype(np.uint16)
        alpha = block[:, :, 3:]
        mixed = block[:, :, :3] * alpha + 255 * (255 - alpha)  # <= 255², fits in uint16
        out[top : top + rows] = (mixed + 127) // 255
    return out


def shown(path: Path | str) -> str:
    """A file name as messages and logs show it: control characters (a newline in a name would
    forge a log line) and bytes that are not UTF-8 are escaped."""
    text = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def require_regular_file(path: Path, missing: str, wanted: str) -> None:
    """A one-line `UserError` unless `path` is a regular file: `missing` when nothing is there,
    else what it is instead (a folder, a pipe, a device such as /dev/zero: never read) and
    that `wanted` is expected, e.g. "an image file"."""
    if not path.exists():
        raise UserError(missing)
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a pipe or a device)"
        raise UserError(f"{shown(path)} is {kind}; give {wanted}")


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
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # not .npy, pickled, truncated
        raise UserError(f"{shown(path)} is not a packed image array (.npy): {e}") from None
    if (
        not isinstance(arr, np.ndarray)
        or arr.dtype != np.uint8
        or arr.ndim != 4
        or arr.shape[-1] != 3
    ):
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else "an .npz archive"
        raise UserError(f"{shown(path)}: expected uint8 (N, H, W, 3) images, got {got}")
    return arr


def png_bytes(img: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG bytes (deterministic)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"could not encode an image of shape {img.shape} as PNG")
    return buf.tobytes()


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
