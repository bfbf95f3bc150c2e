"""Procedurally drawn anime-style face portraits: the synthetic dataset of the `demo` stage.

A fresh clone has no real dataset, so the `demo` stage draws faces here. Each face is built from
random parts (head shape, skin, hair colour and style, eyes, mouth, clothes, background) in
"face space": canvas units with the origin on the eye line, x right, y down, the head about half
the canvas wide. One pose (rotation, scale, shift) maps face space to pixels for every part, and
drawing happens on a supersampled canvas that is shrunk with INTER_AREA for clean edges.

Each face also has a render style (`RenderStyle`): shading, outlines, eye highlights and hair
detail, drawn from a random stream of its own, independent of who the face is (hair, colours,
shapes, pose). The rough recipe erases the style, so the style is what a style code or a
reference picture must carry; `write_faces_zip` records each face's levels in `styles.csv`, and
where each factor is drawn (`render_face_regions`: skin and clothes, irises, hair, backdrop) as a
region map per face (`spade.style_labels.REGIONS_DIR`).

Random draws never depend on `size`, so one (seed, index) is the same face at every resolution.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from spade.files import ZIP_DATE, atomic_path
from spade.parallel import ordered_map
from spade.style_labels import LABELS_NAME, labels_csv, region_map_name

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 32, 512
_MIN_CANVAS = 256  # supersampled drawing canvas is at least this many pixels wide
_SHIFT = 4  # fractional bits of polygon vertices: sub-pixel precision for fillPoly/polylines
_ANCHOR = np.array([0.5, 0.45])  # where the eye-line centre sits on the canvas, before jitter

Color = tuple[int, int, int]

# The demo's named colours: drawn by name here, offered by name in the studio's palette.
SKIN_TONES: dict[str, Color] = {
    "porcelain": (255, 236, 226),
    "fair": (255, 226, 208),
    "light": (252, 214, 190),
    "beige": (244, 200, 170),
    "tan": (230, 182, 148),
    "brown": (208, 158, 120),
    "deep": (182, 130, 96),
}
HAIR_COLORS: dict[str, Color] = {
    "black": (38, 34, 44),
    "dark brown": (84, 56, 44),
    "brown": (142, 96, 60),
    "blonde": (238, 206, 124),
    "red": (188, 52, 46),
    "orange": (232, 124, 52),
    "pink": (246, 150, 188),
    "blue": (66, 104, 206),
    "light blue": (132, 192, 242),
    "silver": (196, 202, 214),
    "green": (74, 156, 96),
    "teal": (50, 150, 160),
    "purple": (138, 90, 190),
}
SCLERA: Color = (250, 250, 252)
MOUTH, TONGUE = (150, 48, 60), (226, 110, 120)


# --------------------------------------------------------------------------- geometry helpers


@functools.cache
def _unit(n: int) -> np.ndarray:
    """linspace(0, 1, n), cached: np.linspace costs more than most of the drawing here."""
    t = np.linspace(0.0, 1.0, n)
    t.flags.writeable = False
    return t


@functools.cache
def _bezier_basis(n: int) -> np.ndarray:
    t = _unit(n)[:, None]
    return np.hstack([(1 - t) ** 2, 2 * (1 - t) * t, t**2])


@functools.lru_cache(maxsize=256)  # bounded: a few arcs have random angles
def _unit_arc(a0: float, a1: float, n: int) -> np.ndarray:
    t = np.radians(a0 + (a1 - a0) * _unit(n))
    arc = np.stack([np.cos(t), np.sin(t)], axis=1)
    arc.flags.writeable = False
    return arc


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 32):
    """Points on an ellipse from angle a0 to a1 (degrees; 90 points down, 270 up)."""
    return _unit_arc(a0, a1, n) * np.array([rx, ry]) + np.array([cx, cy])


def _bezier(p0, p1, p2, n: int = 10) -> np.ndarray:
    """Quadratic Bézier from p0 to p2 pulled towards p1."""
    return _bezier_basis(n) @ np.array([p0, p1, p2], dtype=float)


def _stroke(line: np.ndarray, width) -> np.ndarray:
    """Polygon around a centre line with per-point width: tapered lashes, brows and strands."""
    d = np.empty_like(line)
    d[1:-1] = line[2:] - line[:-2]
    d[0], d[-1] = line[1] - line[0], line[-1] - line[-2]
    normal = d[:, ::-1] * [-1.0, 1.0]
    half = np.asarray(width, dtype=float).reshape(-1, 1) / 2
    normal *= half / (np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12)
    return np.concatenate([line + normal, (line - normal)[::-1]])


@functools.cache
def _taper_profile(n: int, power: float) -> np.ndarray:
    return np.sin(np.pi * _unit(n)) ** power


def _taper(n: int, width: float, power: float = 0.7) -> np.ndarray:
    """Width profile that is zero at both ends and `width` in the middle."""
    return width * _taper_profile(n, power)


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0])


# --------------------------------------------------------------------------- colour helpers


def _color(values) -> Color:
    r, g, b = (min(255, max(0, round(float(v)))) for v in values)
    return r, g, b


def hsv(h: float, s: float, v: float) -> Color:
    return _color(255 * c for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def mix(a: Color, b: Color, t: float) -> Color:
    """Blend a → b by t (0 = a, 1 = b)."""
    return _color(x + (y - x) * t for x, y in zip(a, b, strict=True))


def _shade(c: Color, f: float) -> Color:
    return _color(x * f for x in c)


def _jitter(rng: np.random.Generator, c: Color, amount: int) -> Color:
    return _color(np.asarray(c) + rng.integers(-amount, amount + 1, size=3))


WHITE: Color = (255, 255, 255)
INK: Color = (32, 22, 28)


# --------------------------------------------------------------------------- render style

# Each factor's levels, in label order. The rough recipe erases all of them.
STYLE_FACTORS: dict[str, tuple[str, ...]] = {
    "shading": ("flat", "hatched", "tone"),  # skin and clothes: none; lines; dots, in the shadow
    "eyes": ("matte", "sparkle"),  # irises: plain; dotted with white highlights
    "hair": ("plain", "strands"),  # flat hair; strand lines
    "background": ("plain", "dotted"),  # the backdrop: its gradient alone; with screentone
}


NO_REGION = 0  # in a region map: a pixel no factor is drawn on (sclera, lashes, mouth…)


def region_value(factor: str) -> int:
    """A factor's value in a region map: 1 + its index in STYLE_FACTORS."""
    return 1 + list(STYLE_FACTORS).index(factor)


@dataclass(frozen=True)
class RenderStyle:
    """How a face is drawn, apart from who she is: one level index per factor."""

    shading: int = 0
    eyes: int = 0
    hair: int = 0
    background: int = 0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> RenderStyle:
        return cls(*(int(rng.integers(len(levels))) for levels in STYLE_FACTORS.values()))

    def labels(self) -> dict[str, str]:
        """{'shading': 'flat', …}: the level names."""
        return {f: levels[getattr(self, f)] for f, levels in STYLE_FACTORS.items()}

    def is_(self, factor: str, level: str) -> bool:
        return STYLE_FACTORS[factor][getattr(self, factor)] == level


_STYLE_STREAM = 1  # the style's RNG is default_rng([seed, index, _STYLE_STREAM])
# Shading keeps each part's most common colour, and stays within the rough recipe's colour
# radius of it, so mean shift gives the same blob colour in every style; contours are thin
# enough for the first median blur to remove.
_LIGHT = np.array([0.8, 0.6])  # face-space direction the light travels: from the top left
# Textures are drawn on the output pixel grid, one pixel wide and _PERIOD apart: the first median
# blur (3×3) removes every one of them, as no 3×3 window holds more than 3 or 4 of their pixels
# (the parts they cover never overlap). Screentone dots, hatching rows, strand columns.
_PERIOD = 3
_SHADE_ALPHA, _STRAND_ALPHA, _BACKDROP_ALPHA = 1.0, 1.0, 0.6
_CONTOUR_WIDTH = 0.004  # face-space units (1 unit = the image side)


def face_style(seed: int, index: int) -> RenderStyle:
    """The render style of face (seed, index): its own stream, so identity never depends on it."""
    return RenderStyle.draw(np.random.default_rng([seed, index, _STYLE_STREAM]))


# --------------------------------------------------------------------------- drawing


class _Pen:
    """Draws face-space shapes onto the supersampled canvas through one pose transform."""

    def __init__(
        self,
        img: np.ndarray,
        angle: float,
        scale: float,
        shift: np.ndarray,
        style: RenderStyle,
        k: int,
        regions: np.ndarray | None = None,
    ) -> None:
        self.img, self.style, self.k = img, style, k  # k: canvas pixels per output pixel
        # the region map being drawn alongside (or None): each fill writes `self.region` there
        self.regions, self.region = regions, NO_REGION
        side = img.shape[0]
        c, s = math.cos(angle), math.sin(angle)
        self._matrix = np.array([[c, -s], [s, c]]) * scale * side * (1 << _SHIFT)
        self._offset = (_ANCHOR + shift) * side * (1 << _SHIFT)
        self._unit = scale * side  # pixels per face-space unit, for line widths

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        return np.rint(points @ self._matrix.T + self._offset).astype(np.int32)

    def fill(self, points: np.ndarray, color: Color, region: int | None = None) -> None:
        """A filled shape; on the region map, `region` (the part being drawn by default)."""
        pts = [self._fixed(points)]
        cv2.fillPoly(self.img, pts, color, cv2.LINE_AA, _SHIFT)
        if self.regions is not None:
            value = self.region if region is None else region
            cv2.fillPoly(self.regions, pts, value, cv2.LINE_8, _SHIFT)

    def line(self, points: np.ndarray, color: Color, width: float, closed: bool = False) -> None:
        thickness = max(1, round(width * self._unit))
        pts = [self._fixed(points)]
        cv2.polylines(self.img, pts, closed, color, thickness, cv2.LINE_AA, _SHIFT)

    def contour(self, points: np.ndarray, color: Color) -> None:
        """A closed shape's thin outline (every style has it: bolder lines would survive the
        rough recipe, moving the blobs' edges)."""
        self.line(points, color, _CONTOUR_WIDTH, closed=True)

    def shade(self, points: np.ndarray) -> None:
        """Shade a part of skin or clothes just filled: nothing (flat), or, over its half away
        from the light, rows of hatching (hatched) or screentone dots (tone)."""
        if self.style.is_("shading", "flat"):
            return
        along = points @ _LIGHT
        texture = self._rows if self.style.is_("shading", "hatched") else self._dots
        far_half = _beyond((along.min() + along.max()) / 2)
        self.blend(far_half, INK, _SHADE_ALPHA, clip=points, pattern=texture)

    def strands(self, points: np.ndarray, color: Color) -> None:
        """Hair strands over a part of the hair, in the `strands` style."""
        if self.style.is_("hair", "strands"):
            self.blend(points, _shade(color, 0.4), _STRAND_ALPHA, pattern=self._columns)

    def sparkle(self, points: np.ndarray) -> None:
        """White highlight dots in an iris, in the `sparkle` style."""
        if self.style.is_("eyes", "sparkle"):
            self.blend(points, WHITE, 1.0, pattern=self._dots, inset=False)

    def blend(
        self,
        points: np.ndarray,
        color: Color,
        alpha: float,
        clip: np.ndarray | None = None,
        pattern: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        inset: bool = True,
    ) -> None:
        """Fill translucently (blush, shadows), optionally only inside the polygon `clip`, and
        with `pattern(x, y)` (canvas pixel coordinates → opacity 0…1) as a texture.

        Works on the shape's bounding box only, with an anti-aliased coverage mask.
        """
        fixed = self._fixed(points)
        h, w = self.img.shape[:2]
        x0, y0 = np.clip((fixed.min(axis=0) >> _SHIFT) - 2, 0, [w, h])
        x1, y1 = np.clip((fixed.max(axis=0) >> _SHIFT) + 3, 0, [w, h])
        if x1 <= x0 or y1 <= y0:
            return
        origin = np.array([x0, y0], dtype=np.int32) << _SHIFT
        cover = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(cover, [fixed - origin], 255, cv2.LINE_AA, _SHIFT)
        if clip is not None:
            inside = np.zeros_like(cover)
            cv2.fillPoly(inside, [self._fixed(clip) - origin], 255, cv2.LINE_AA, _SHIFT)
            cover = cv2.multiply(cover, inside, scale=1 / 255)
        roi = self.img[y0:y1, x0:x1]
        if pattern is not None:
            if inset:  # an output pixel inside the part's edges: they stay clean
                cover = cv2.erode(cover, np.ones((2 * self.k + 1,) * 2, np.uint8))
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            cover = cover * pattern(xx, yy)
        a = cover[..., None] * np.float32(alpha / 255)
        roi[:] = roi + (np.array(color, np.float32) - roi) * a + np.float32(0.5)

    def _grid(self, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canvas pixel coordinates → (column, row) of the output pixel they shrink into, modulo
        _PERIOD. Columns count from the nearer side edge, so a mirrored face (training flips
        faces) has its texture in the same place."""
        ox, oy = xx.astype(np.int32) // self.k, yy.astype(np.int32) // self.k
        side = self.img.shape[1] // self.k
        return np.minimum(ox, side - 1 - ox) % _PERIOD, oy % _PERIOD

    def _dots(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Screentone: two output pixels in nine, apart."""
        column, row = self._grid(xx, yy)
        return (((column == 0) & (row == 0)) | ((column == 1) & (row == 2))).astype(np.float32)

    def _columns(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Strand lines: one column of output pixels in three."""
        column, _ = self._grid(xx, yy)
        return (column == 0).astype(np.float32)

    def _rows(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Hatching: one row of output pixels in three."""
        _, row = self._grid(xx, yy)
        return (row == 0).astype(np.float32)


# --------------------------------------------------------------------------- face parts


@dataclass(frozen=True)
class _Head:
    half_width: float
    top: float  # skull height above the eye line
    chin: float  # chin depth below the eye line
    jaw_power: float  # superellipse exponent of the jaw: ~1.15 pointed chin, 2 round


@dataclass(frozen=True)
class _Palette:
    skin: Color
    hair: Color
    iris: Color
    shirt: Color
    collar: Color
    background: tuple[Color, Color]

    @property
    def skin_shadow(self) -> Color:
        return mix(self.skin, (196, 110, 110), 0.22)

    @property
    def hair_dark(self) -> Color:
        return mix(self.hair, (20, 10, 30), 0.45)


def _random_palette(rng: np.random.Generator) -> _Palette:
    skin = _jitter(rng, list(SKIN_TONES.values())[rng.integers(len(SKIN_TONES))], 6)
    hair = _jitter(rng, list(HAIR_COLORS.values())[rng.integers(len(HAIR_COLORS))], 18)
    iris = hsv(rng.random(), rng.uniform(0.45, 0.9), rng.uniform(0.55, 0.95))
    shirt = hsv(rng.random(), rng.uniform(0.15, 0.8), rng.uniform(0.25, 0.95))
    collar = WHITE if rng.random() < 0.5 else hsv(rng.random(), rng.uniform(0.3, 0.9), 0.5)
    top = hsv(rng.random(), rng.uniform(0.05, 0.55), rng.uniform(0.55, 1.0))
    if rng.random() < 0.5:
        bottom = top
    else:
        bottom = hsv(rng.random(), rng.uniform(0.05, 0.55), rng.uniform(0.45, 1.0))
    return _Palette(skin, hair, iris, shirt, collar, (top, bottom))


def _background(img: np.ndarray, colors: tuple[Color, Color]) -> None:
    t = _unit(img.shape[0])[:, None]
    column = np.rint((1 - t) * np.array(colors[0]) + t * np.array(colors[1])).astype(np.uint8)
    cv2.resize(column[:, None, :], img.shape[1::-1], dst=img, interpolation=cv2.INTER_NEAREST)


def _face_outline(h: _Head, n: int = 40) -> np.ndarray:
    """Rounded skull over a superellipse jaw, clockwise from the left cheek."""
    top = _arc(0.0, 0.0, h.half_width, h.top, 180, 360, n)
    u = _unit(n)
    x = h.half_width * (1 - u**h.jaw_power) ** (1 / h.jaw_power)
    right = np.stack([x, u * h.chin], axis=1)  # right cheek down to the chin
    return np.concatenate([top, right[1:], _mirror(right[::-1])[1:-1]])


def _jagged(x0: float, x1: float, y_tip, y_valley, rng: np.random.Generator, n: int, sweep=0.0):
    """Edge of spiky hair from x0 to x1: n tips (lower) between n + 1 valleys (upper).

    `y_tip` and `y_valley` map x arrays to heights, so the edge can follow the head's curve;
    `sweep` leans every spike sideways (in units of spike width). Returns (edge, valleys).
    """
    step = (x1 - x0) / n
    xs = x0 + (x1 - x0) * _unit(n + 1) + np.r_[0, rng.uniform(-0.3, 0.3, n - 1), 0] * step
    valleys = np.stack([xs, np.broadcast_to(y_valley(xs), xs.shape)], axis=1)
    mid = (xs[:-1] + xs[1:]) / 2 + sweep * abs(step) * rng.uniform(0.3, 0.9, n)
    tips = np.stack([mid, y_tip(mid) + rng.uniform(-0.02, 0.02, n)], axis=1)
    bend = np.array([sweep * 0.3 * abs(step), 0.0])
    basis = _bezier_basis(6)[1:]  # each side of a spike without its first point
    down = np.stack([valleys[:-1], (valleys[:-1] + tips) / 2 + bend, tips], axis=1)
    up = np.stack([tips, (tips + valleys[1:]) / 2 + bend, valleys[1:]], axis=1)
    sides = np.einsum("kj,njd->nkd", basis, np.concatenate([down, up], axis=0))
    edge = np.concatenate([sides[:n], sides[n:]], axis=1).reshape(-1, 2)
    return np.concatenate([valleys[:1], edge]), valleys


def _back_hair(pen: _Pen, rng: np.random.Generator, h: _Head, pal: _Palette) -> None:
    """Hair behind the head: short bob, shoulder length or long."""
    rx, ry = h.half_width * rng.uniform(1.16, 1.3), h.top * rng.uniform(1.2, 1.32)
    style = rng.choice(["short", "shoulder", "long"], p=[0.3, 0.35, 0.35])
    end = {"short": h.chin * 0.6, "shoulder": h.chin + 0.12, "long": 0.62}[style]
    end += rng.uniform(-0.03, 0.03)
    flare = rng.uniform(1.0, 1.15) if style == "short" else rng.uniform(1.1, 1.35)
    crown = _arc(0.0, 0.0, rx, ry, 180, 360)
    right = _bezier((rx, 0.0), (rx * 1.05, end / 2), (rx * flare, end))
    depth = rng.uniform(0.02, 0.05)
    bottom, _ = _jagged(
        rx * flare,
        -rx * flare,
        lambda x: end + depth,
        lambda x: end - depth,
        rng,
        rng.integers(4, 8),
    )
    outline = np.concatenate([crown, right[1:], bottom[1:], _mirror(right[::-1])[1:-1]])
    color = pal.hair_dark if rng.random() < 0.5 else _shade(pal.hair, 0.85)
    pen.fill(outline, color)
    pen.strands(outline, color)
    pen.contour(outline, _shade(pal.hair_dark, 0.7))


def _neck_and_shirt(pen: _Pen, rng: np.random.Generator, h: _Head, pal: _Palette) -> None:
    neck_w = h.half_width * rng.uniform(0.34, 0.44)
    y_sh = h.chin + rng.uniform(0.1, 0.14)  # neckline height
    pen.fill(np.array([[-neck_w, 0.0], [neck_w, 0.0], [neck_w, 0.7], [-neck_w, 0.7]]), pal.skin)
    jaw = _face_outline(h)
    jaw = jaw[(jaw[:, 1] > 0) & (np.abs(jaw[:, 0]) < neck_w)] + [0.0, rng.uniform(0.03, 0.06)]
    pen.fill(np.concatenate([[[neck_w, 0.0]], jaw, [[-neck_w, 0.0]]]), pal.skin_shadow)

    open_w = neck_w * rng.uniform(1.15, 1.6)
    dip = rng.uniform(0.02, 0.1)
    shoulder = rng.uniform(0.36, 0.46)
    right = np.concatenate(
        [
            _bezier((open_w, y_sh), (shoulder * 0.5, y_sh + 0.01), (shoulder, y_sh + 0.07), 8),
            _bezier((shoulder, y_sh + 0.07), (0.5, y_sh + 0.1), (0.56, 0.8), 8)[1:],
        ]
    )
    neckline = _bezier((-open_w, y_sh), (0.0, y_sh + 2 * dip), (open_w, y_sh), 12)
    body = np.concatenate([neckline, right[1:], [[0.56, 0.9], [-0.56, 0.9]], _mirror(right[::-1])])
    pen.fill(body, pal.shirt)
    pen.shade(body)
    kind = rng.integers(3)
    if kind == 1:  # collar flaps
        for side in (-1.0, 1.0):
            flap = np.array(
                [[open_w, y_sh - 0.01], [0.02, y_sh + dip + 0.02], [open_w + 0.1, y_sh + 0.07]]
            )
            pen.fill(flap * [side, 1.0], pal.collar)
            pen.contour(flap * [side, 1.0], _shade(pal.shirt, 0.6))
    elif kind == 2:  # contrasting band along the neckline
        pen.line(neckline, pal.collar, 0.022)
    pen.contour(body, _shade(pal.shirt, 0.6))


_CANVAS = np.array([[-2.0, -2.0], [2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])  # all of it, in face space


def _beyond(cut: float) -> np.ndarray:
    """A big quad covering the face-space points p with p · _LIGHT > cut (the shadow side)."""
    across = np.array([-_LIGHT[1], _LIGHT[0]])
    corners = ((-2.0, 0.0), (2.0, 0.0), (2.0, 2.0), (-2.0, 2.0))  # (across, along)
    return np.array([(cut + b) * _LIGHT + a * across for a, b in corners])


def _face(pen: _Pen, h: _Head, pal: _Palette) -> None:
    outline = _face_outline(h)
    pen.fill(outline, pal.skin)
    pen.shade(outline)
    pen.contour(outline, mix(pal.skin, INK, 0.45))


class _EyeShape(NamedTuple):
    cx: float  # distance of each eye's centre from the face's midline
    cy: float
    rx: float
    ry: float
    light: float  # ±1: the side the highlights sit on, the same in both eyes


def _eye(pen: _Pen, pal: _Palette, geo: _EyeShape, side: float) -> None:
    """One eye; geometry is built for the right eye (outer corner at +x) and mirrored by `side`."""
    cx, cy, rx, ry, light = geo
    at = np.array([cx * side, cy])

    def put(points: np.ndarray) -> np.ndarray:
        return points * [side, 1.0] + at

    iris = region_value("eyes")
    pen.fill(put(_arc(0, 0, rx, ry, 0, 360, 40)), SCLERA)
    icx, icy, irx, iry = -0.04 * rx, 0.06 * ry, 0.64 * rx, 0.92 * ry
    pen.fill(put(_arc(icx, icy, irx, iry, 0, 360, 40)), _shade(pal.iris, 0.55), iris)
    pen.fill(put(_arc(icx, icy + 0.22 * iry, 0.82 * irx, 0.7 * iry, 0, 360, 32)), pal.iris, iris)
    pupil = put(_arc(icx, icy - 0.05 * iry, 0.4 * irx, 0.5 * iry, 0, 360))
    pen.fill(pupil, _shade(pal.iris, 0.25), iris)
    glint = (cx + icx) * side + light * 0.3 * irx, cy + icy - 0.38 * iry
    hr = 0.34 * irx  # every eye has its glint; sparkling ones have more
    pen.fill(_arc(glint[0], glint[1], hr, hr * 1.1, 0, 360, 20), WHITE, iris)
    pen.sparkle(put(_arc(icx, icy, irx, iry, 0, 360, 40)))

    lash_low = _arc(0, 0, rx, ry, 195, 345, 24)
    lash_high = _arc(0.08 * rx, 0.05 * ry, rx * 1.12, ry * 1.3, 345, 195, 24)
    pen.fill(put(np.concatenate([lash_low, lash_high])), INK)
    lower = _arc(0, 0, rx, ry, 20, 75, 12)
    pen.fill(put(_stroke(lower, _taper(12, 0.006))), mix(INK, pal.skin, 0.3))


def _brow(
    pen: _Pen, cx: float, y: float, rx: float, lift: float, color: Color, side: float
) -> None:
    line = _bezier((cx - 0.8 * rx, y + 0.01), (cx, y - lift), (cx + 1.1 * rx, y + 0.012), 14)
    pen.fill(_stroke(line, _taper(14, 0.011, 0.5)) * [side, 1.0], color)


def _features(pen: _Pen, rng: np.random.Generator, h: _Head, pal: _Palette) -> None:
    """Eyes, brows, nose, mouth and blush."""
    rx = h.half_width * rng.uniform(0.27, 0.33)
    ry = rx * rng.uniform(0.95, 1.2)
    cx, cy = h.half_width * rng.uniform(0.42, 0.48), rng.uniform(0.0, 0.03)
    geo = _EyeShape(cx, cy, rx, ry, 1.0 if rng.random() < 0.5 else -1.0)
    brow_y = cy - ry * 1.3 - rng.uniform(0.025, 0.05)
    brow_color = mix(pal.hair, INK, 0.5)
    lift = rng.uniform(0.0, 0.025)
    for side in (-1.0, 1.0):
        _eye(pen, pal, geo, side)
        _brow(pen, cx, brow_y, rx, lift, brow_color, side)

    line = mix(pal.skin, INK, 0.5)
    nose_y = h.chin * rng.uniform(0.38, 0.46)
    pen.fill(
        _stroke(
            _bezier((0.004, nose_y - 0.02), (0.012, nose_y), (0.0, nose_y + 0.01), 8),
            _taper(8, 0.007),
        ),
        mix(pal.skin, INK, 0.3),
    )
    mouth_y = h.chin * rng.uniform(0.64, 0.72)
    mw = h.half_width * rng.uniform(0.12, 0.22)
    if rng.random() < 0.35:  # open mouth
        top = _bezier((-mw, mouth_y), (0.0, mouth_y + 0.005), (mw, mouth_y), 10)
        low = _bezier((mw, mouth_y), (0.0, mouth_y + rng.uniform(0.04, 0.07)), (-mw, mouth_y), 12)
        pen.fill(np.concatenate([top, low[1:-1]]), MOUTH)
        pen.fill(_arc(0, mouth_y + 0.028, mw * 0.55, 0.012, 180, 360, 12), TONGUE)
    else:
        curve = rng.uniform(-0.004, 0.018)
        smile = _bezier((-mw, mouth_y), (0.0, mouth_y + curve), (mw, mouth_y), 12)
        pen.fill(_stroke(smile, _taper(12, 0.008, 0.4)), line)

    if rng.random() < 0.6:
        blush_x, blush_y = h.half_width * rng.uniform(0.5, 0.6), cy + ry + 0.035
        for side in (-1.0, 1.0):
            blush = _arc(side * blush_x, blush_y, 0.055, 0.022, 0, 360)
            pen.blend(blush, (255, 110, 130), 0.35, clip=_face_outline(h))


def _side_locks(pen: _Pen, rng: np.random.Generator, h: _Head, pal: _Palette) -> None:
    """Strands hanging in front of the ears, framing the face.

    They start low and narrow enough (y = -0.15, x = 0.88 half-widths) to begin under the cap.
    """
    w = h.half_width
    length = rng.uniform(0.05, h.chin + 0.1)
    width = w * rng.uniform(0.22, 0.32)
    top = (0.88 * w, -0.15)
    for side in (-1.0, 1.0):
        outer = _bezier(top, (1.1 * w, -0.05), (w, length), 12)
        inner = _bezier((w, length), (w - width, length * 0.3), (top[0] - width, top[1]), 12)
        lock = np.concatenate([outer, inner[1:]]) * [side, 1.0]
        pen.fill(lock, pal.hair)
        pen.strands(lock, pal.hair)
        pen.contour(lock, pal.hair_dark)


def _bangs(pen: _Pen, rng: np.random.Generator, h: _Head, pal: _Palette) -> None:
    """Hair cap over the skull with a spiky fringe over the forehead."""
    face = _face_outline(h)
    rx, ry = h.half_width * rng.uniform(1.1, 1.2), h.top * rng.uniform(1.1, 1.2)
    tip_depth = rng.uniform(-0.13, -0.06)  # how far the fringe reaches down over the brows
    valley_depth = tip_depth - rng.uniform(0.08, 0.14)
    side_drop = rng.uniform(0.0, 0.16)  # outer spikes hang down beside the face

    side_y = tip_depth + side_drop  # the cap's sides come down to here
    lift = math.degrees(math.asin(min(0.0, side_y) / ry))  # crown ends at side_y if above 0
    crown = _arc(0.0, 0.0, rx, ry, 180 - lift, 360 + lift)
    side_x = crown[-1, 0]

    def y_tip(x: np.ndarray) -> np.ndarray:
        return tip_depth + side_drop * np.abs(x / rx) ** 3

    def y_valley(x: np.ndarray) -> np.ndarray:
        y = valley_depth + 0.05 * (x / rx) ** 2
        # the end points sit as low as the outermost tips, so no notch opens at the temples
        return np.where(np.abs(x) >= side_x * 0.999, side_y, y)

    n_spikes, sweep = rng.integers(5, 9), rng.uniform(-0.3, 0.3)
    fringe, valleys = _jagged(side_x, -side_x, y_tip, y_valley, rng, n_spikes, sweep)
    cap = np.concatenate([crown, fringe])
    shadow = fringe + np.array([0.0, 0.025])  # the fringe's shadow on the forehead
    top = valleys[:, 1].min() - 0.01  # close the shadow polygon just above the fringe
    corners = [[-side_x, top], [side_x, top]]
    pen.blend(np.concatenate([shadow, corners]), pal.skin_shadow, 0.7, clip=face)
    pen.fill(cap, pal.hair)
    pen.strands(cap, pal.hair)

    pen.contour(cap, pal.hair_dark)


# --------------------------------------------------------------------------- public API


def _supersample(size: int) -> int:
    """Drawing scale: at least 2× and at least a _MIN_CANVAS-pixel canvas."""
    return max(2, -(-_MIN_CANVAS // size))


def render_face(seed: int, index: int, size: int, style: RenderStyle | None = None) -> np.ndarray:
    """RGB uint8 array of shape (size, size, 3). Deterministic in (seed, index, size);
    each index uses its own RNG, np.random.default_rng([seed, index]), so image i does not
    depend on how many images are drawn. `style` overrides the face's own (`face_style`): the
    same person drawn in another style."""
    return _render(seed, index, size, style, with_regions=False)[0]


def render_face_regions(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`render_face` and its (size, size) uint8 region map: at each pixel the factor drawn there
    (`region_value`: the skin and clothes are shading's, the irises the eyes', the hair the
    hair's, the backdrop the background's) or NO_REGION; each pixel takes the part under the
    centre of its supersampled block."""
    img, regions = _render(seed, index, size, None, with_regions=True)
    assert regions is not None
    return img, regions


def _render(
    seed: int, index: int, size: int, style: RenderStyle | None, with_regions: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    rng = np.random.default_rng([seed, index])
    k = _supersample(size)
    side = size * k
    img = np.empty((side, side, 3), np.uint8)
    regions = np.full((side, side), region_value("background"), np.uint8) if with_regions else None
    pal = _random_palette(rng)
    half_width = rng.uniform(0.22, 0.26)
    head = _Head(
        half_width=half_width,
        top=half_width * rng.uniform(1.05, 1.2),
        chin=half_width * rng.uniform(1.05, 1.3),
        jaw_power=rng.uniform(1.15, 1.9),
    )
    angle = math.radians(rng.uniform(-8.0, 8.0))
    style = face_style(seed, index) if style is None else style
    pose = (angle, rng.uniform(0.9, 1.1), rng.uniform(-0.03, 0.03, size=2))
    pen = _Pen(img, *pose, style, k, regions)

    _background(img, pal.background)
    if style.is_("background", "dotted"):
        pen.blend(_CANVAS, INK, _BACKDROP_ALPHA, pattern=pen._dots)
    pen.region = region_value("hair")
    _back_hair(pen, rng, head, pal)
    pen.region = region_value("shading")  # skin and clothes
    _neck_and_shirt(pen, rng, head, pal)
    _face(pen, head, pal)
    pen.region = NO_REGION  # eyes (their irises excepted), brows, nose, mouth
    _features(pen, rng, head, pal)
    pen.region = region_value("hair")
    if rng.random() < 0.6:
        _side_locks(pen, rng, head, pal)
    _bangs(pen, rng, head, pal)
    face = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return face, None if regions is None else regions[k // 2 :: k, k // 2 :: k].copy()


def _png(img: np.ndarray) -> bytes:
    """cv2 PNG, compression 6: the same bytes everywhere."""
    ok, png = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def face_pngs(seed: int, indices: range, size: int) -> list[tuple[bytes, bytes]]:
    """The faces `indices` and their region maps, as PNG files."""
    pngs = []
    for i in indices:
        face, regions = render_face_regions(seed, i, size)
        pngs.append((_png(cv2.cvtColor(face, cv2.COLOR_RGB2BGR)), _png(regions)))
    return pngs


def _zip_entry(name: str) -> zipfile.ZipInfo:
    """A stored entry with fixed date and attributes: the same bytes everywhere."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # unix, so external_attr means the same everywhere
    info.external_attr = 0o644 << 16
    return info


def write_faces_zip(path: Path, count: int, size: int, seed: int, n_jobs: int = 1) -> None:
    """Write `count` faces as PNG files named f"{i:06d}.png" into a zip at `path`, drawn on
    `n_jobs` processes, their render styles as `styles.csv` and their region maps under
    `regions/` (`spade.style_labels`); byte for byte deterministic (stored, not deflated; fixed
    dates and attributes), atomic."""
    path = Path(path)
    chunks = [range(a, min(a + 64, count)) for a in range(0, count, 64)]
    pngs = ordered_map(functools.partial(face_pngs, seed, size=size), chunks, n_jobs)
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf,
        tqdm(total=count, desc="drawing faces", unit="img") as bar,
    ):
        for indices, chunk in zip(chunks, pngs, strict=True):
            for i, (face, regions) in zip(indices, chunk, strict=True):
                name = f"{i:06d}.png"
                zf.writestr(_zip_entry(name), face)
                zf.writestr(_zip_entry(region_map_name(name)), regions)
            bar.update(len(indices))
        styles = ((f"{i:06d}.png", face_style(seed, i).labels()) for i in range(count))
        zf.writestr(_zip_entry(LABELS_NAME), labels_csv(list(STYLE_FACTORS), styles))
    log.info("wrote %d synthetic faces (%d px, seed %d) to %s", count, size, seed, path)
