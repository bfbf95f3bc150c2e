"""Deterministic train/test sampling from a folder (recursive) or a .zip of images.

Candidates are all files of the source in sorted order, shuffled by a seeded permutation. The
sample walks that order and keeps the first `n_images` files that decode; the files that don't
are listed in a report and replaced by the next candidates, so the sample never silently shrinks.
The first `n_test` kept images form the test split, the rest the train split. The four outputs
(train.npy, test.npy, manifest.csv, report.json) are replaced together, or not at all.

A `styles.csv` at the source's root (`spade.style_labels`) is not a candidate: its style levels
go into the manifest, one `style_<factor>` column each, for the sampled images. Beside it, the
region maps under `regions/` are not candidates either: the test images' maps, cropped and resized
as the images are (nearest neighbour), are packed into `test_regions.npy` (written only when the
source has maps).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from spade.config import SampleConfig
from spade.errors import UserError
from spade.files import atomic_paths, json_bytes
from spade.images import (
    MAX_IMAGE_BYTES,
    UnreadableImage,
    center_square,
    decode_rgb,
    open_image_array,
    resize_square,
    shown,
)
from spade.style_labels import (
    LABELS_NAME,
    REGIONS_DIR,
    STYLE_PREFIX,
    parse_labels,
    region_map_name,
)

log = logging.getLogger(__name__)

# A candidate that raises one of these is skipped and reported: a broken image, a zip entry with
# a bad CRC, an encrypted entry or an unsupported compression method, an unreadable file.
READ_ERRORS = (UnreadableImage, zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError)
MANIFEST_COLUMNS = ["index", "split", "path", "sha1", "width", "height"]


class TooLarge(Exception):
    pass


def _hidden(rel_parts: tuple[str, ...]) -> bool:
    """Hidden files and folders, and macOS zip metadata."""
    return any(p.startswith(".") or p == "__MACOSX" for p in rel_parts)


@dataclass
class Scan:
    names: list[str] = field(default_factory=list)  # candidates, sorted
    ignored: list[dict[str, str]] = field(default_factory=list)  # reported, never candidates


class ImageSource:
    """Read-only view of a folder tree or a .zip archive as sorted relative names → bytes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(
                f"sample.source: {self.path} does not exist. Use the demo "
                "(data/demo/faces.zip) or download a dataset and point sample.source at it "
                "(see README, 'Use the real dataset')"
            )
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise UserError(f"sample.source: {self.path} is a file but not a .zip archive")
            self._zip = zipfile.ZipFile(self.path)
            scan = self._scan_zip(self._zip)
        else:
            scan = self._scan_folder(self.path)
        self.has_labels = LABELS_NAME in scan.names
        maps = {n for n in scan.names if self.has_labels and n.startswith(f"{REGIONS_DIR}/")}
        self.names = sorted(n for n in scan.names if n != LABELS_NAME and n not in maps)
        self._maps = maps
        self.ignored = scan.ignored

    @property
    def has_regions(self) -> bool:
        """Whether the source ships region maps (`regions/` beside labelled images)."""
        return bool(self._maps)

    def style_labels(self) -> tuple[list[str], dict[str, dict[str, str]]]:
        """(factors, {name: {factor: level}}) from the source's styles.csv, if it has one."""
        if not self.has_labels:
            return [], {}
        return parse_labels(self.read(LABELS_NAME), f"{self.path}/{LABELS_NAME}")

    def region_map(self, name: str, image_shape: tuple[int, ...], size: int) -> np.ndarray:
        """The region map of image `name`, cropped and resized as the image is; all zeros (no
        factor anywhere) when it has none. A map that does not fit its image is a `UserError`."""
        map_name = region_map_name(name)
        if map_name not in self._maps:
            return np.zeros((size, size), np.uint8)
        where = f"{self.path}/{shown(map_name)}"
        try:
            with Image.open(io.BytesIO(self.read(map_name)), formats=["PNG"]) as img:
                if img.mode != "L":
                    raise UserError(
                        f"{where}: a region map is a one-channel 8-bit PNG, not {img.mode}"
                    )
                regions = np.asarray(img)
        except (UnidentifiedImageError, TooLarge, OSError) as e:
            raise UserError(f"{where} is not a readable PNG region map ({e})") from None
        if regions.shape != image_shape[:2]:
            raise UserError(
                f"{where} is {regions.shape[1]}×{regions.shape[0]}, its image "
                f"{image_shape[1]}×{image_shape[0]}"
            )
        square = center_square(regions)
        return cv2.resize(square, (size, size), interpolation=cv2.INTER_NEAREST)

    @staticmethod
    def _scan_zip(zf: zipfile.ZipFile) -> Scan:
        scan = Scan()
        for info in zf.infolist():
            if info.is_dir():
                continue
            if _hidden(tuple(info.filename.split("/"))):
                scan.ignored.append({"path": info.filename, "reason": "hidden"})
            else:
                scan.names.append(info.filename)
        return scan

    @staticmethod
    def _scan_folder(root: Path) -> Scan:
        """Walk the tree (with a progress count: network disks can be slow to list)."""
        scan = Scan()
        with tqdm(desc="scanning source", unit=" files") as bar:
            for folder, dirs, files in os.walk(root):
                rel = Path(folder).relative_to(root)
                for name in sorted(d for d in dirs if _hidden((d,))):  # not walked into
                    scan.ignored.append(
                        {"path": shown((rel / name).as_posix()), "reason": "hidden"}
                    )
                dirs[:] = sorted(d for d in dirs if not _hidden((d,)))
                for name in sorted(files):
                    path = Path(folder, name)
                    rel_name = (rel / name).as_posix()
                    if _hidden((name,)):
                        scan.ignored.append({"path": shown(rel_name), "reason": "hidden"})
                    elif not path.is_file():  # a broken link or a link loop
                        reason = "not a regular file (broken link or link loop)"
                        scan.ignored.append({"path": shown(rel_name), "reason": reason})
                    else:
                        scan.names.append(rel_name)
                    bar.update()
        return scan

    def read(self, name: str) -> bytes:
        """The file's bytes; `TooLarge` (unread) when over MAX_IMAGE_BYTES."""
        if self._zip is not None:
            info = self._zip.getinfo(name)
            if info.file_size > MAX_IMAGE_BYTES:
                raise TooLarge(f"{info.file_size} bytes uncompressed")
            with self._zip.open(info) as f:
                data = f.read(MAX_IMAGE_BYTES + 1)  # the header may lie
        else:
            with open(self.path / name, "rb") as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise TooLarge(f"more than {MAX_IMAGE_BYTES} bytes")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _draw(
    source: ImageSource, cfg: SampleConfig
) -> Iterator[tuple[str, bytes, np.ndarray] | tuple[str, str]]:
    """Yield (name, bytes, image) for each decodable candidate and (name, reason) for the rest."""
    order = np.random.default_rng(cfg.seed).permutation(len(source.names))
    for i in order:
        name = source.names[i]
        try:
            data = source.read(name)
            yield name, data, decode_rgb(data)
        except TooLarge as e:
            yield name, f"too large to be an image ({e}); skipped unread"
        except READ_ERRORS as e:
            yield name, str(e) if isinstance(e, UnreadableImage) else f"{type(e).__name__}: {e}"


def _manifest_csv(rows: list[dict[str, Any]], factors: list[str]) -> bytes:
    buf = io.StringIO()
    columns = MANIFEST_COLUMNS + [STYLE_PREFIX + f for f in factors]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def sample_images(cfg: SampleConfig, out_dir: Path) -> None:
    """Write train.npy, test.npy, manifest.csv and report.json into `out_dir`."""
    source = ImageSource(cfg.source)
    factors, labels = source.style_labels()
    n_test, n_train = cfg.n_test, cfg.n_images - cfg.n_test
    if len(source.names) < cfg.n_images:
        raise UserError(
            f"sample.n_images = {cfg.n_images} but {cfg.source} holds only "
            f"{len(source.names)} files"
        )
    names = ["test.npy", "train.npy", "manifest.csv", "report.json"]
    regions_path = out_dir / "test_regions.npy"
    if source.has_regions:
        names.append(regions_path.name)
    else:
        regions_path.unlink(missing_ok=True)  # an older sample's: its maps are not this one's
    outputs = [out_dir / n for n in names]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    upscaled = 0
    with atomic_paths(outputs) as (test_path, train_path, manifest_path, report_path, *maps):
        size = cfg.image_size
        arrays = {
            "test": open_image_array(test_path, (n_test, size, size, 3)),
            "train": open_image_array(train_path, (n_train, size, size, 3)),
        }
        # the test faces' region maps; none to hold (and no memory) without them
        test_regions = np.zeros((n_test if maps else 0, size, size), np.uint8)
        bar = tqdm(total=cfg.n_images, desc="sample", unit="img")
        for item in _draw(source, cfg):
            if len(item) == 2:
                skipped.append({"path": shown(item[0]), "reason": item[1]})
                continue
            name, data, img = item
            k = len(rows)
            split, index = ("test", k) if k < n_test else ("train", k - n_test)
            arrays[split][index] = resize_square(img, size)
            if split == "test" and maps:
                test_regions[index] = source.region_map(name, img.shape, size)
            upscaled += min(img.shape[:2]) < size
            levels = labels.get(name, {})  # unlabelled images leave the columns empty
            rows.append(
                {
                    "index": index,
                    "split": split,
                    "path": shown(name),
                    "sha1": hashlib.sha1(data).hexdigest(),
                    "width": img.shape[1],
                    "height": img.shape[0],
                }
                | {STYLE_PREFIX + f: levels.get(f, "") for f in factors}
            )
            bar.update()
            if len(rows) == cfg.n_images:
                break
        bar.close()
        source.close()
        if len(rows) < cfg.n_images:
            raise UserError(_too_few_message(cfg, len(rows), len(skipped), len(source.names)))
        for arr in arrays.values():
            arr.flush()
        del arrays
        if test_regions.max(initial=0) > len(factors):
            raise UserError(
                f"{cfg.source}: a region map holds {test_regions.max()}, but {LABELS_NAME} has "
                f"{len(factors)} factors (a map's pixel is 1 + a factor's index, or 0)"
            )
        manifest_path.write_bytes(_manifest_csv(rows, factors))
        if maps:
            with open(maps[0], "wb") as f:
                np.save(f, test_regions, allow_pickle=False)
        report = {
            "source": cfg.source,
            "candidates": len(source.names),
            "sampled": len(rows),
            "train": n_train,
            "test": n_test,
            "upscaled": upscaled,
            "skipped": skipped,
            "ignored": source.ignored,
        }
        report_path.write_bytes(json_bytes(report))
    if skipped:
        log.warning("skipped %d unreadable files (listed in %s)", len(skipped), outputs[3])
    if upscaled:
        log.warning(
            "%d images were smaller than %d px and were enlarged (counted in %s)",
            upscaled,
            size,
            outputs[3],
        )


def _too_few_message(cfg: SampleConfig, valid: int, unreadable: int, files: int) -> str:
    head = (
        f"sample.n_images = {cfg.n_images} but only {valid} valid images exist in "
        f"{cfg.source} ({unreadable} of {files} files are unreadable"
    )
    if valid >= 2:
        return f"{head}; lower sample.n_images to at most {valid})"
    return f"{head}; point sample.source at a folder or .zip of images)"
