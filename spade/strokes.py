"""Brush strokes as a person paints them on the studio's canvas: for benchmarks and tests.

A stroke is a hard-edged round brush (as the page's) dragged along a smooth wandering path,
painted in one colour until it has changed a given fraction of the canvas.
"""

from __future__ import annotations

import numpy as np

from spade.errors import UserError


def brush_for(fraction: float, size: int) -> int:
    """A brush diameter in px that suits a stroke changing `fraction` of a `size` px canvas:
    small touches with a fine brush, big ones with a broad one (4 % of the side at 1 %)."""
    return max(2, round(size * (0.025 + 0.15 * fraction**0.5)))


def _disc(diameter: int) -> np.ndarray:
    r = diameter / 2
    yy, xx = np.mgrid[:diameter, :diameter] + 0.5 - r
    return yy**2 + xx**2 <= r**2


def brush_stroke(
    rough: np.ndarray,
    fraction: float,
    colour: tuple[int, int, int],
    rng: np.random.Generator,
    diameter: int | None = None,
    start: tuple[float, float] | None = None,
) -> np.ndarray:
    """A copy of the (S, S, 3) uint8 `rough` with one stroke of `colour` that changes about
    `fraction` of its pixels (less when the canvas has too few pixels of other colours)."""
    if not 0 < fraction <= 1:
        raise UserError(f"a stroke changes between 0 and 100 % of the canvas, not {fraction:g}")
    out = rough.copy()
    size = rough.shape[0]
    diameter = diameter or brush_for(fraction, size)
    disc = _disc(diameter)
    target = fraction * size * size
    pos = np.array(start if start is not None else rng.uniform(0, size, 2), dtype=float)
    heading = rng.uniform(0, 2 * np.pi)
    changed, steps = 0, 0
    while changed < target and steps < 50 * size:
        y, x = (pos - diameter / 2).round().astype(int)
        ys = slice(max(y, 0), min(y + diameter, size))
        xs = slice(max(x, 0), min(x + diameter, size))
        hit = disc[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
        patch = out[ys, xs]
        new = hit & (patch != colour).any(-1)
        changed += int(new.sum())
        patch[hit] = colour
        heading += rng.normal(0, 0.25)  # a smooth, wandering hand
        pos = pos + max(1.0, diameter / 4) * np.array([np.sin(heading), np.cos(heading)])
        if not (0 <= pos[0] < size and 0 <= pos[1] < size):  # turn back at the edge
            heading += np.pi
            pos = pos.clip(0, size - 1)
        steps += 1
    return out
