"""Deterministic train/test sampling from a folder (recursive) or a .zip of images.

Candidates are all files of the source in sorted order, shuffled by a seeded permutation. The
sample walks that order and keeps the first `n_images` files that decode; the files that don't
are listed in a report and replaced by the next candidates, so the sample never silently shrinks.
The first `n_test` kept images form the test split, the rest the train split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from spade.config import SampleConfig
from spade.errors import UserError
from spade.images import UnreadableImage, atomic_path, decode_rgb, open_image_array, resize_square

log = logging.getLogger(__name__)

# A candidate that raises one of these is skipped and reported: a broken image, a zip entry with
# a bad CRC, an encrypted entry or an unsupported compression method, an unreadable file.
READ_ERRORS = (UnreadableImage, zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError)


def _visible(rel_parts: tuple[str, ...]) -> bool:
    """Skip hidden files and folders and macOS zip metadata."""
    return not any(p.startswith(".") or p == "__MACOSX" for p in rel_parts)


class ImageSource:
    """Read-only view of a folder tree or a .zip archive as sorted relative names → bytes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(
                f"sample.source: {self.path} does not exist. Use the demo "
                "(data/demo/faces.zip) or download a dataset and point sample.source at it "
                "(see README, 'Use your own dataset')"
            )
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise UserError(f"sample.source: {self.path} is a file but not a .zip archive")
            self._zip = zipfile.ZipFile(self.path)
            names = [
                i.filename
                for i in self._zip.infolist()
                if not i.is_dir() and _visible(tuple(i.filename.split("/")))
            ]
        else:
            names = [
                p.relative_to(self.path).as_posix()
                for p in self.path.rglob("*")
                if p.is_file() and _visible(p.relative_to(self.path).parts)
            ]
        self.names = sorted(names)

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

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
        except (
            UnreadableImage,
            zipfile.BadZipFile,
            OSError,
            RuntimeError,
            NotImplementedError,
        ) as e:
            yield name, str(e) if isinstance(e, UnreadableImage) else f"{type(e).__name__}: {e}"


def sample_images(cfg: SampleConfig, out_dir: Path) -> None:
    """Write train.npy, test.npy, manifest.csv and report.json into `out_dir`."""
    source = ImageSource(cfg.source)
    n_test, n_train = cfg.n_test, cfg.n_images - cfg.n_test
    if len(source.names) < cfg.n_images:
        raise UserError(
            f"sample.n_images = {cfg.n_images} but {cfg.source} holds only "
            f"{len(source.names)} files"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    skipped: list[dict[str, str]] = []
    with (
        atomic_path(out_dir / "test.npy") as test_path,
        atomic_path(out_dir / "train.npy") as train_path,
    ):
        arrays = {
            "test": open_image_array(test_path, (n_test, cfg.image_size, cfg.image_size, 3)),
            "train": open_image_array(train_path, (n_train, cfg.image_size, cfg.image_size, 3)),
        }
        bar = tqdm(total=cfg.n_images, desc="sample", unit="img")
        for item in _draw(source, cfg):
            if len(item) == 2:
                skipped.append({"path": item[0], "reason": item[1]})
                continue
            name, data, img = item
            k = len(rows)
            split, index = ("test", k) if k < n_test else ("train", k - n_test)
            arrays[split][index] = resize_square(img, cfg.image_size)
            rows.append(
                {
                    "index": index,
                    "split": split,
                    "path": name,
                    "sha1": hashlib.sha1(data).hexdigest(),
                    "width": img.shape[1],
                    "height": img.shape[0],
                }
            )
            bar.update()
            if len(rows) == cfg.n_images:
                break
        bar.close()
        source.close()
        if len(rows) < cfg.n_images:
            raise UserError(
                f"sample.n_images = {cfg.n_images} but only {len(rows)} valid images exist in "
                f"{cfg.source} ({len(skipped)} of {len(source.names)} files are unreadable; "
                f"lower sample.n_images to at most {len(rows)})"
            )
        for arr in arrays.values():
            arr.flush()
        del arrays
    manifest = pd.DataFrame(rows, columns=["index", "split", "path", "sha1", "width", "height"])
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    report = {
        "source": cfg.source,
        "candidates": len(source.names),
        "sampled": len(rows),
        "train": n_train,
        "test": n_test,
        "skipped": skipped,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if skipped:
        log.warning(
            "skipped %d unreadable files (listed in %s)", len(skipped), out_dir / "report.json"
        )
