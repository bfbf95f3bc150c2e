"""The rough recipe behind a content-addressed cache, on one of three engines.

Recipe (the seed's, `config.Recipe`), on RGB input:
    RGB2HSV → medianBlur(median_before) → pyrMeanShiftFiltering(sp, sr, maxLevel)
    → medianBlur(median_after) → HSV2RGB
`roughen_image` is four of those OpenCV calls and `spade.roughen.hsv.hsv_to_rgb`, the arithmetic
of OpenCV's x86 SIMD HSV→RGB (whose own result depends on the CPU), so a rough has the same bytes
on every machine.

Engines, all byte-identical (so the engine is a speed knob, not a stage dependency):
- `opencv`: those calls in a local process pool (joblib), one OpenCV thread per process;
- `opencv` on a Dask cluster (`scheduler`), through joblib's Dask backend: workers get image
  batches and return roughs, this process keeps the cache and writes the outputs;
- `torch`: `spade.roughen.torch_engine`, the same algorithm batched on a GPU.
`auto` picks `torch` when CUDA is present (a GPU roughens 256 px images far faster than a
machine's CPU cores; on a CPU the torch port is 5-9x slower than OpenCV), else `opencv`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from joblib import effective_n_jobs
from tqdm import tqdm

from spade.config import Recipe
from spade.errors import UserError
from spade.files import write_bytes
from spade.parallel import ordered_map
from spade.roughen.hsv import HSV_TO_RGB_VERSION, hsv_to_rgb

log = logging.getLogger(__name__)


def roughen_image(rgb: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Apply the recipe to one RGB uint8 image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv = cv2.medianBlur(hsv, recipe.median_before)
    hsv = cv2.pyrMeanShiftFiltering(
        hsv, recipe.spatial_radius, recipe.color_radius, maxLevel=recipe.max_level
    )
    hsv = cv2.medianBlur(hsv, recipe.median_after)
    return hsv_to_rgb(hsv)


def _roughen_batch(images: np.ndarray, recipe: Recipe) -> np.ndarray:
    cv2.setNumThreads(1)  # one OpenCV thread per worker: the pool already uses every core
    return np.stack([roughen_image(img, recipe) for img in images])


# --------------------------------------------------------------------------- the cache


class RoughCache:
    """Content-addressed store of roughs: key = sha256(recipe, code versions, shape, pixels).

    Lives outside DVC outputs, so growing the sample only roughens the new images. Writes are
    atomic (`files.write_bytes`), so an interrupted run, or several runs at once, leave no
    half-written entries. A cache that cannot be written (read-only, disk full) is used for
    reading only, with one warning.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.writable = True

    def key(self, img: np.ndarray, recipe: Recipe) -> str:
        versions = {"opencv": cv2.__version__, "hsv_to_rgb": HSV_TO_RGB_VERSION}
        ident = json.dumps({**recipe.model_dump(), **versions}, sort_keys=True)
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


def resolve_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    import torch

    return "torch" if torch.cuda.is_available() else "opencv"


def _on_device(batches: Iterator[np.ndarray], recipe: Recipe) -> Iterator[np.ndarray]:
    import torch

    from spade.roughen.torch_engine import roughen_torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info("roughening with torch on %s", device)
    for images in batches:
        yield roughen_torch(images, recipe, device)


def roughen_array(
    images: np.ndarray,
    out: np.ndarray,
    recipe: Recipe,
    *,
    backend: str = "opencv",
    n_jobs: int = -1,
    batch_size: int = 32,
    scheduler: str = "",
    cache: RoughCache | None = None,
    progress: bool = True,
    desc: str = "roughen",
) -> RoughenStats:
    """Roughen `images` (N, H, W, 3) into `out` (same shape), in order, whatever the engine.

    Finished batches enter the cache as they arrive, so an interrupted run keeps them.
    `scheduler` is a Dask scheduler address for the `opencv` engine ("" = this machine).
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
    backend = resolve_backend(backend)
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS", "")
    with cluster(address if backend == "opencv" else ""):
        # At least 4 batches per worker, so no core idles while another finishes a large one.
        workers = 1 if backend == "torch" else effective_n_jobs(n_jobs)
        batch_size = max(1, min(batch_size, math.ceil(len(todo) / (4 * workers))))
        batches = list(_batches(todo, batch_size))
        inputs = (np.ascontiguousarray(images[idx]) for idx in batches)
        if backend == "torch":
            results = _on_device(inputs, recipe)
        else:
            results = ordered_map(partial(_roughen_batch, recipe=recipe), inputs, n_jobs)
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
            for idx, roughs in zip(batches, results, strict=True):
                out[idx] = roughs  # in order, and into the cache as each batch arrives
                if cache is not None:
                    for i, rough in zip(idx, roughs, strict=True):
                        cache.put(keys[i], rough)
                bar.update(len(idx))
    return RoughenStats(total=len(images), computed=len(todo))


SCHEDULER_TIMEOUT_S = 10


@contextmanager
def cluster(address: str) -> Iterator[None]:
    """Run the process pool on the Dask cluster at `address`, or locally when it is empty.
    An unreachable scheduler is a clear error, not a hang."""
    if not address:
        yield
        return
    from distributed import Client
    from joblib import parallel_config

    try:
        client = Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except (OSError, TimeoutError) as e:
        raise UserError(
            f"run.roughen.scheduler: cannot reach the Dask scheduler at {address} within "
            f"{SCHEDULER_TIMEOUT_S} s ({type(e).__name__}); start it, or set run.roughen.scheduler "
            "to '' to roughen on this machine"
        ) from None
    with client:
        log.info("roughening on the Dask cluster at %s (%s)", address, client.dashboard_link)
        with parallel_config(backend="dask"):
            yield
