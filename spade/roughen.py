"""The rough recipe, run in parallel with joblib behind a content-addressed cache.

Recipe (the seed's), on RGB input:
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from tqdm import tqdm

from spade.config import RoughenConfig

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(".cache/roughen")


@dataclass(frozen=True)
class Recipe:
    median_before: int = 9
    spatial_radius: float = 52.0
    color_radius: float = 52.0
    max_level: int = 1
    median_after: int = 15

    @classmethod
    def from_config(cls, cfg: RoughenConfig) -> Recipe:
        return cls(
            cfg.median_before, cfg.spatial_radius, cfg.color_radius, cfg.max_level, cfg.median_after
        )

    def key(self) -> bytes:
        """Identity of the recipe (and the OpenCV that runs it) for the cache."""
        return json.dumps({**asdict(self), "opencv": cv2.__version__}, sort_keys=True).encode()


def roughen_image(rgb: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Apply the recipe to one RGB uint8 image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv = cv2.medianBlur(hsv, recipe.median_before)
    hsv = cv2.pyrMeanShiftFiltering(
        hsv, recipe.spatial_radius, recipe.color_radius, maxLevel=recipe.max_level
    )
    hsv = cv2.medianBlur(hsv, recipe.median_after)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _roughen_batch(images: np.ndarray, recipe: Recipe) -> np.ndarray:
    # One OpenCV thread per worker: joblib already uses every core.
    cv2.setNumThreads(1)
    return np.stack([roughen_image(img, recipe) for img in images])


class RoughCache:
    """Content-addressed store of roughs: key = sha256(recipe, shape, pixels) → raw bytes.

    Lives outside DVC outputs (default `.cache/roughen`, ignored by git and DVC), so growing the
    sample only roughens the new images. Writes are atomic, so an interrupted run leaves no
    half-written entries.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self, img: np.ndarray, recipe: Recipe) -> str:
        h = hashlib.sha256(recipe.key())
        h.update(repr(img.shape).encode())
        h.update(np.ascontiguousarray(img).data)
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != int(np.prod(shape)):
            return None  # foreign or damaged entry: recompute and overwrite
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)

    def put(self, key: str, rough: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        tmp.write_bytes(np.ascontiguousarray(rough).tobytes())
        os.replace(tmp, path)


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
    """Roughen `images` (N, H, W, 3) into `out` (same shape), in order, whatever `n_jobs` is."""
    assert out.shape == images.shape, (out.shape, images.shape)
    keys: list[str | None] = [None] * len(images)
    todo = []
    for i in range(len(images)):
        if cache is None:
            todo.append(i)
            continue
        keys[i] = cache.key(images[i], recipe)
        hit = cache.get(keys[i], images.shape[1:])
        if hit is None:
            todo.append(i)
        else:
            out[i] = hit
    todo_idx = np.asarray(todo, dtype=np.int64)
    log.info(
        "%s: %d images, %d cached, %d to compute",
        desc,
        len(images),
        len(images) - len(todo),
        len(todo),
    )
    bar = tqdm(total=len(todo_idx), desc=desc, unit="img", disable=not progress)
    # At least 4 batches per worker, so no core idles while another finishes a large batch.
    workers = effective_n_jobs(n_jobs)
    batch_size = max(1, min(batch_size, math.ceil(len(todo_idx) / (4 * workers))))
    batches = list(_batches(todo_idx, batch_size))
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_roughen_batch)(np.ascontiguousarray(images[idx]), recipe) for idx in batches
    )
    for idx, roughs in zip(batches, results, strict=True):
        out[idx] = roughs
        if cache is not None:
            for i, rough in zip(idx, roughs, strict=True):
                cache.put(keys[i], rough)
        bar.update(len(idx))
    bar.close()
    return RoughenStats(total=len(images), computed=len(todo_idx))
