"""The studio's faces, redrawn incrementally per page (`spade.incremental`).

Each page (a random id its script sends with every face request) keeps its last rough and the
activations of its last face, in a `PageCache` bounded in bytes (least recently used pages go
first). A face of the same page with the same seed and styles (the base style and each restyled
region's code, in order) is an incremental redraw; anything else is a full one. The regions'
masks are not part of that key: they follow the rough's blobs, so a stroke that reshapes a
restyled blob redraws what its mask moved, as it redraws what the rough changed:

- with a PyTorch runner, a full redraw is captured as it is computed (no extra cost);
- with an exported graph (ONNX Runtime, OpenVINO: faster for whole faces), a full redraw goes
  through the graph as before and only the rough is kept; the next face of that page and seed
  is captured in PyTorch, and the strokes after it are incremental.

A runner that computes bf16 through OpenVINO gets no incremental redraw: its PyTorch faces
would be fp32, a different face. With `mode` "auto" (the default) the studio measures at start
whether a typical stroke (3 % of the canvas) redraws faster in PyTorch's tiles than a whole face
through the runner, and redraws incrementally only then (a small model, or a GPU, where one
face is launch-bound, may not gain); "on" always, "off" never.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from spade.data import to_images, to_model
from spade.incremental import Canvas, IncrementalGenerator, Redraw
from spade.painter import Painter, RegionStyle
from spade.runtime import TorchRunner, fastest_seconds
from spade.strokes import brush_stroke

log = logging.getLogger(__name__)
CPU = torch.device("cpu")
MODES = ("auto", "on", "off")
MIN_CACHE_BYTES = 256 * 2**20
CACHED_PAGES = 2  # the default budget holds this many pages of the loaded model


@dataclass
class Seen:
    """A page's last full face from an exported graph: its key and rough, no activations."""

    key: tuple
    cond: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.cond.numel() * self.cond.element_size()


Entry = Canvas | Seen


class PageCache:
    """Per-page entries, within `max_bytes` together: the least recently used go first.

    `take` removes a page's entry while it is redrawn (a second request of the same page then
    makes a full face, and an exception mid-redraw cannot leave a half-updated canvas behind);
    `put` brings it back.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self.lock:
            return sum(e.nbytes for e in self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, page: str) -> Entry | None:
        with self.lock:
            return self.entries.pop(page, None)

    def put(self, page: str, entry: Entry) -> None:
        if entry.nbytes > self.max_bytes:
            log.warning(
                "a page's redraw cache (%.0f MiB) exceeds the limit (%.0f MiB): not kept",
                entry.nbytes / 2**20,
                self.max_bytes / 2**20,
            )
            return
        with self.lock:
            self.entries[page] = entry
            total = sum(e.nbytes for e in self.entries.values())
            while total > self.max_bytes:
                _, old = self.entries.popitem(last=False)
                total -= old.nbytes


def incremental_off_reason(painter: Painter) -> str | None:
    """Why this painter cannot redraw incrementally, or None when it can."""
    runner = painter.runner
    if not isinstance(runner, TorchRunner) and runner.dtype != torch.float32:
        return f"{runner.name} computes {runner.dtype}; PyTorch's tiles would be another face"
    return None


def _first_page(painter: Painter) -> tuple[np.ndarray, list]:
    """The page's starting rough, and its palette's colours."""
    from spade.studio.palette import default_rough, palette  # the page's own canvas

    colours = palette(painter.recipe)
    return default_rough(painter.size, colours), colours


def cache_bytes(painter: Painter, engine: IncrementalGenerator) -> int:
    """The default budget of all pages' caches: `CACHED_PAGES` canvases of this model (one
    captured to weigh it), and at least `MIN_CACHE_BYTES`."""
    rough, _ = _first_page(painter)
    z, noise = painter.randomness(0)
    canvas = engine.capture(to_model(rough[None], CPU), z, noise)
    return max(MIN_CACHE_BYTES, CACHED_PAGES * canvas.nbytes)


def stroke_gain(painter: Painter, engine: IncrementalGenerator) -> tuple[float, float]:
    """(ms of a 3 % stroke redrawn incrementally, ms of a whole face through the runner) on
    the starting canvas with seed 0: what `auto` decides by."""
    rough, colours = _first_page(painter)
    z, noise = painter.randomness(0)
    cond = to_model(rough[None], CPU)
    full = 1000 * fastest_seconds(lambda: painter.runner(cond, z, noise))
    canvas = engine.capture(cond, z, noise)
    rng, times = np.random.default_rng(0), []
    for i in range(3):  # the first is a warm-up (the first tile shapes)
        rough = brush_stroke(rough, 0.03, colours[i + 1].rgb, rng)
        stroke = fastest_seconds(lambda r=rough: engine.redraw(canvas, to_model(r[None], CPU)), 1)
        times.append(1000 * stroke)
    return min(times[1:]), full


class Redrawer:
    """Faces of pages: incremental when the page's last face had the same seed and style.
    `max_bytes` bounds all pages' caches together (None: `cache_bytes`)."""

    def __init__(self, painter: Painter, max_bytes: int | None = None, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"incremental redraw: {mode!r} is not one of {', '.join(MODES)}")
        self.painter = painter
        self.off = "off by request" if mode == "off" else incremental_off_reason(painter)
        runner = painter.runner
        self.capture_first = isinstance(runner, TorchRunner)
        generator = runner.generator if isinstance(runner, TorchRunner) else None
        self.engine = IncrementalGenerator(generator or painter.model.generator.eval())
        self.last: Redraw | None = None
        if mode == "auto" and self.off is None:
            with torch.inference_mode():
                stroke, full = stroke_gain(painter, self.engine)
            log.info("a 3%% stroke: %.0f ms incrementally, a whole face %.0f ms", stroke, full)
            if stroke >= full:
                self.off = (
                    f"a 3% stroke redrawn incrementally ({stroke:.0f} ms) is no faster than "
                    f"a whole face through {runner.name} ({full:.0f} ms)"
                )
        if max_bytes is None:
            max_bytes = MIN_CACHE_BYTES if self.off else cache_bytes(painter, self.engine)
            log.info("pages' redraw caches: at most %.0f MiB together", max_bytes / 2**20)
        self.pages = PageCache(max_bytes)

    def face(
        self,
        page: str | None,
        rough: np.ndarray,
        seed: int,
        z: torch.Tensor | None = None,
        regions: Sequence[RegionStyle] = (),
    ) -> tuple[np.ndarray, Redraw]:
        """The face of `rough` for `page` (None: no page, a plain full face), with base style
        `z` (the seed's own when None) and restyled `regions`."""
        if page is None or self.off:
            self.last = Redraw(False, 1.0, 1.0)
            return self.painter.face(rough, seed, z, regions), self.last
        zz, noise = self.painter.randomness(seed, z)
        codes, masks = self.painter.style_map(zz, regions)
        cond = to_model(rough[None], CPU)
        key = (seed, codes.numpy().tobytes())
        face, self.last = self._page_face(page, cond, codes, noise, masks, key)
        return to_images(face)[0], self.last

    def _page_face(
        self, page: str, cond, codes, noise, masks, key: tuple
    ) -> tuple[torch.Tensor, Redraw]:
        entry = self.pages.take(page)
        same = entry is not None and entry.key == key
        if same and isinstance(entry, Canvas):
            info = self.engine.redraw(entry, cond, masks)
            self.pages.put(page, entry)
            return entry.face, info
        changed = (cond != entry.cond).any(1).float().mean().item() if same else 1.0
        if self.capture_first or same:
            canvas = self.engine.capture(cond, codes, noise, key, masks)
            self.pages.put(page, canvas)
            return canvas.face, Redraw(False, changed, 1.0)
        self.pages.put(page, Seen(key, cond))
        return self.painter.runner(cond, codes, noise, masks), Redraw(False, changed, 1.0)

    def info(self) -> dict:
        """For /api/info: whether faces are redrawn incrementally, the cache, the last face."""
        out = {
            "enabled": self.off is None,
            "cache_bytes": self.pages.nbytes,
            "max_cache_bytes": self.pages.max_bytes,
            "pages": len(self.pages),
        }
        if self.off:
            out["why_not"] = self.off
        if self.last is not None:
            out["last"] = header_fields(self.last)
        return out


def header_fields(info: Redraw) -> dict:
    return {
        "incremental": info.incremental,
        "changed": round(info.changed, 4),
        "recomputed": round(info.recomputed, 4),
    }


def header(info: Redraw, regions: int = 0) -> str:
    """The `X-Redraw` response header: `incremental` or `full`, the fractions, and the number
    of restyled regions when there are any."""
    kind = "incremental" if info.incremental else "full"
    text = f"{kind}; changed={info.changed:.4f}; recomputed={info.recomputed:.4f}"
    return f"{text}; regions={regions}" if regions else text
