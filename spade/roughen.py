"""The rough recipe, run in parallel with joblib behind a content-addressed cache.

Recipe (the seed's, `config.Recipe`), on RGB input:
    RGB2HSV → medianBlur(median_before) → pyrMeanShiftFiltering(sp, sr, maxLevel)
    → medianBlur(median_after) → HSV2RGB
`roughen_image` is exactly those five OpenCV calls, so its output is bit-identical to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from tqdm import tqdm

from spade.config import Recipe
from spade.files import write_bytes

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`SPADE_ROUGHEN_CACHE`, else the user's cache folder: shared by every clone and by
    `dvc exp run --queue` workers (whose temporary workspaces would each start empty)."""
    if "SPADE_ROUGHEN_CACHE" in os.environ:
        return Path(os.environ["SPADE_ROUGHEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spade-anime" / "roughen"


def roughen_image(rgb: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Apply the recipe to one RGB uint8 image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv = cv2.medianBlur(hsv, recipe.median_before)
    hsv = cv2.pyrMeanShiftFiltering(
        hsv, recipe.spatial_radius, recipe.color_radius, maxLevel=recipe.max_level
    )
    hsv = cv2.medianBlur(hsv, recipe.median_after)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


# --------------------------------------------------------------------------- worker processes

_watchdog_started = False


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # the parent died (SIGKILL): do not run on as an orphan
            os._exit(1)


def _watch_parent() -> None:
    """In a worker process: exit as soon as the process that started it is gone."""
    global _watchdog_started
    if _watchdog_started or threading.current_thread() is not threading.main_thread():
        return
    _watchdog_started = True
    args = (os.getppid(),)
    threading.Thread(target=_exit_when_orphaned, args=args, daemon=True).start()


def _roughen_batch(images: np.ndarray, recipe: Recipe, in_worker: bool) -> np.ndarray:
    if in_worker:
        _watch_parent()
    cv2.setNumThreads(1)  # one OpenCV thread per worker: joblib already uses every core
    return np.stack([roughen_image(img, recipe) for img in images])


# --------------------------------------------------------------------------- the cache


class RoughCache:
    """Content-addressed store of roughs: key = sha256(recipe, OpenCV version, shape, pixels).

    Lives outside DVC outputs, so growing the sample only roughens the new images. Writes are
    atomic (`files.write_bytes`), so an interrupted run, or several runs at once, leave no
    half-written entries. A cache that cannot be written (read-only, disk full) is used for
    reading only, with one warning.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.writable = True

    def key(self, img: np.ndarray, recipe: Recipe) -> str:
        ident = json.dumps({**recipe.model_dump(), "opencv": cv2.__version__}, sort_keys=True)
        h = hashlib.sha256(ident.encode())
        h.update(repr(img.shape).encode())
        h.update(np.ascontiguousarray(img).data)
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        if len(data) != math.prod(shape):
            return None  # foreign or damaged entry: recompute and overwrite
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)

    def put(self, key: str, rough: np.ndarray) -> None:
        if not self.writable:
            return
        try:
            write_bytes(self._path(key), np.ascontiguousarray(rough).tobytes())
        except OSError as e:
            self.writable = False
            log.warning("roughen cache %s is not writable (%s): computing without it", self.root, e)


@dataclass
class RoughenStats:
    total: int
    computed: int

    @property
    def cached(self) -> int:
        return self.total - self.computed


def _batches(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _lookup(images: np.ndarray, out: np.ndarray, recipe: Recipe, cache: RoughCache | None):
    """Fill `out` from the cache; return the keys and the indices still to compute."""
    keys: list[str | None] = [None] * len(images)
    todo = []
    for i in range(len(images)):
        if cache is not None:
            keys[i] = cache.key(images[i], recipe)
            hit = cache.get(keys[i], images.shape[1:])
            if hit is not None:
                out[i] = hit
                continue
        todo.append(i)
    return keys, np.asarray(todo, dtype=np.int64)


def roughen_array(
    images: np.ndarray,
    out: np.ndarray,
    recipe: Recipe,
    *,
    n_jobs: int = -1,
    batch_size: int = 32,
    cache: RoughCache | None = None,
    progress: bool = True,
    desc: str = "roughen",
) -> RoughenStats:
    """Roughen `images` (N, H, W, 3) into `out` (same shape), in order, whatever `n_jobs` is.

    Finished batches enter the cache as they arrive, so an interrupted run keeps them.
    """
    assert out.shape == images.shape, (out.shape, images.shape)
    keys, todo = _lookup(images, out, recipe, cache)
    log.info(
        "%s: %d images, %d cached, %d to compute",
        desc,
        len(images),
        len(images) - len(todo),
        len(todo),
    )
    # At least 4 batches per worker, so no core idles while another finishes a large batch.
    workers = effective_n_jobs(n_jobs)
    batch_size = max(1, min(batch_size, math.ceil(len(todo) / (4 * workers))))
    batches = list(_batches(todo, batch_size))
    in_worker = workers > 1
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_roughen_batch)(np.ascontiguousarray(images[idx]), recipe, in_worker)
        for idx in batches
    )
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
        for idx, roughs in zip(batches, results, strict=True):
            out[idx] = roughs
            if cache is not None:
                for i, rough in zip(idx, roughs, strict=True):
                    cache.put(keys[i], rough)
            bar.update(len(idx))
    return RoughenStats(total=len(images), computed=len(todo))
