"""Image files for the command line (`spade generate`, `spade export`): reading one picture,
writing PNG files. No stage imports this module, so changing it reruns nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from spade.errors import UserError
from spade.files import write_bytes
from spade.images import (
    MAX_IMAGE_BYTES,
    UnreadableImage,
    decode_rgb,
    load_image_array,
    png_bytes,
    require_regular_file,
    shown,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_image_file(path: Path | str) -> bytes:
    """The bytes of a regular image file, at most MAX_IMAGE_BYTES; anything else (a folder, a
    pipe, a device such as /dev/zero, a huge file) is a one-line `UserError`, read no further."""
    path = Path(path)
    require_regular_file(path, f"image not found: {shown(path)}", "an image file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise UserError(f"cannot read {shown(path)}: {e.strerror or e}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise UserError(f"{shown(path)} is larger than {MAX_IMAGE_BYTES >> 20} MiB: not an image")
    return data


def read_rgb(path: Path | str) -> np.ndarray:
    """Read an image file as RGB uint8, with a `UserError` that names the file on failure."""
    try:
        return decode_rgb(read_image_file(path))
    except UnreadableImage as e:
        raise UserError(f"cannot read image {shown(path)}: {e}") from e


def save_png(path: Path | str, img: np.ndarray) -> None:
    """Write `img` as a PNG file; one that cannot be written (permissions, a file in the way) is
    a one-line `UserError`."""
    try:
        write_bytes(path, png_bytes(img))
    except OSError as e:
        raise UserError(f"cannot write {shown(path)}: {e.strerror or e}") from None


def export_pngs(array_path: Path | str, out_dir: Path | str, limit: int | None = None) -> int:
    """Write the images of a packed .npy array as numbered PNG files; returns how many. Files
    already there are never overwritten: the export is refused before it writes anything."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: give how many images to write (1 or more)")
    images = load_image_array(array_path)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{shown(out_dir)} is a file; give a folder for the PNG files")
    n = len(images) if limit is None else min(limit, len(images))
    width = max(6, len(str(n)))
    targets = [out_dir / f"{i:0{width}d}.png" for i in range(n)]
    existing = [t for t in targets if t.exists()]
    if existing:
        raise UserError(
            f"{shown(out_dir)} already holds {len(existing)} of the files to write "
            f"({shown(existing[0].name)}, …); choose an empty folder"
        )
    for i, target in enumerate(tqdm(targets, desc="export", unit="img", disable=None)):
        save_png(target, images[i])
    return n
