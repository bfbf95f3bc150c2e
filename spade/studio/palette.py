"""The studio's named colours and its starting canvas.

The generator only ever saw roughs: flat blobs in the colours the demo faces are drawn with
(`spade.synthetic`), passed through the roughen recipe. So the palette takes those colours by
name and sends each through the model's own recipe on a flat patch; what comes out is exactly
the colour a rough of that part holds (the recipe's HSV round trip shifts most colours a little).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from spade.config import Recipe
from spade.roughen import roughen_image
from spade.synthetic import HAIR_COLORS, MOUTH, SCLERA, SKIN_TONES, TONGUE, WHITE, Color, hsv, mix

_PATCH = 32  # side of the flat patch each colour is roughened on

# Backgrounds, irises and shirts are random hues in spade.synthetic; these are named points of
# the same ranges (background s 0.05-0.55, v 0.45-1; iris s 0.45-0.9; shirt s 0.15-0.8).
_BACKGROUNDS = {
    "sky": hsv(0.58, 0.35, 0.9),
    "lilac": hsv(0.78, 0.35, 0.85),
    "pink": hsv(0.88, 0.4, 0.85),
    "peach": hsv(0.07, 0.3, 0.95),
    "sand": hsv(0.12, 0.25, 0.85),
    "mint": hsv(0.42, 0.3, 0.85),
    "olive": hsv(0.22, 0.45, 0.7),
    "slate": hsv(0.6, 0.25, 0.5),
}
# At the demo's size an eye roughens to its iris blended with the white around it.
_EYES = {
    name: mix(hsv(h, 0.7, 0.75), SCLERA, 0.3)
    for name, h in (
        ("blue eyes", 0.6),
        ("green eyes", 0.33),
        ("violet eyes", 0.77),
        ("red eyes", 0.98),
        ("amber eyes", 0.1),
        ("teal eyes", 0.5),
    )
}
_EYES["eye white"] = SCLERA
_MOUTH = {"mouth": MOUTH, "tongue": TONGUE}
_CLOTHES = {
    "white collar": WHITE,
    "navy": hsv(0.63, 0.6, 0.4),
    "red": hsv(0.0, 0.7, 0.75),
    "green": hsv(0.36, 0.55, 0.55),
    "yellow": hsv(0.14, 0.6, 0.9),
    "grey": hsv(0.0, 0.15, 0.35),
}


@dataclass(frozen=True)
class NamedColour:
    group: str  # background, hair, skin, eyes, mouth, clothes
    name: str
    rgb: Color

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    def to_json(self) -> dict[str, object]:
        return {"group": self.group, "name": self.name, "rgb": list(self.rgb), "hex": self.hex}


def _source_colours() -> list[tuple[str, str, Color]]:
    """(group, name, drawing colour) before roughening, in the order the page shows them."""
    out = [("background", n, c) for n, c in _BACKGROUNDS.items()]
    out += [("hair", n, c) for n, c in HAIR_COLORS.items()]
    out += [("skin", n, c) for n, c in SKIN_TONES.items()]
    out += [("eyes", n, c) for n, c in _EYES.items()]
    out += [("mouth", n, c) for n, c in _MOUTH.items()]
    out += [("clothes", n, c) for n, c in _CLOTHES.items()]
    return out


def as_roughened(rgb: Color, recipe: Recipe) -> Color:
    """The colour a flat patch of `rgb` has after the recipe."""
    patch = np.full((_PATCH, _PATCH, 3), rgb, np.uint8)
    r, g, b = (int(v) for v in roughen_image(patch, recipe)[_PATCH // 2, _PATCH // 2])
    return r, g, b


def palette(recipe: Recipe) -> list[NamedColour]:
    """The named colours of roughs made with `recipe` (duplicates after roughening dropped)."""
    seen: set[Color] = set()
    out = []
    for group, name, rgb in _source_colours():
        colour = as_roughened(rgb, recipe)
        if colour not in seen:
            seen.add(colour)
            out.append(NamedColour(group, name, colour))
    return out


def _pick(colours: list[NamedColour], group: str, name: str) -> Color:
    found = [c.rgb for c in colours if c.group == group and c.name == name]
    return found[0] if found else next(c.rgb for c in colours if c.group == group)


def default_rough(size: int, colours: list[NamedColour]) -> np.ndarray:
    """A simply painted face in palette colours, hard-edged (no anti-aliasing): the canvas a
    new page starts from. Drawn in fractions of `size`, so it fits every model."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = _pick(colours, "background", "sky")
    hair = _pick(colours, "hair", "pink")
    skin = _pick(colours, "skin", "fair")
    eyes = _pick(colours, "eyes", "violet eyes")
    shirt = _pick(colours, "clothes", "navy")

    def pt(x: float, y: float) -> tuple[int, int]:
        return round(x * size), round(y * size)

    def ln(v: float) -> int:
        return max(1, round(v * size))

    def ellipse(cx: float, cy: float, rx: float, ry: float, colour: Color) -> None:
        cv2.ellipse(img, pt(cx, cy), (ln(rx), ln(ry)), 0, 0, 360, colour, -1, cv2.LINE_8)

    def poly(points: list[tuple[float, float]], colour: Color) -> None:
        cv2.fillPoly(img, [np.array([pt(x, y) for x, y in points])], colour, cv2.LINE_8)

    poly([(0.22, 0.4), (0.78, 0.4), (0.84, 0.86), (0.16, 0.86)], hair)  # long back hair
    ellipse(0.5, 0.4, 0.3, 0.3, hair)
    poly([(0.0, 1.0), (0.08, 0.86), (0.38, 0.8), (0.62, 0.8), (0.92, 0.86), (1.0, 1.0)], shirt)
    poly([(0.42, 0.6), (0.58, 0.6), (0.58, 0.84), (0.42, 0.84)], skin)  # neck
    poly([(0.28, 0.4), (0.72, 0.4), (0.68, 0.62), (0.5, 0.76), (0.32, 0.62)], skin)  # face
    poly([(0.24, 0.42), (0.26, 0.2), (0.74, 0.2), (0.76, 0.42), (0.6, 0.34), (0.4, 0.34)], hair)
    for x in (0.39, 0.61):
        ellipse(x, 0.48, 0.05, 0.06, eyes)
    return img
