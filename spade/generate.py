"""`spade generate`: turn the user's own rough drawings (or, with `roughen`, any pictures) into
anime faces, one file each (or one strip of faces each), through a `Painter`.

Nothing the user gave is ever overwritten: outputs that would replace an input, each other, or
(without `--overwrite`) a file already in the output folder are refused before anything is
written.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spade.errors import UserError
from spade.image_files import IMAGE_SUFFIXES, read_rgb, save_png
from spade.images import shown
from spade.painter import Painter, RegionStyle
from spade.regions import MAX_CODES, region_at, region_of_color

log = logging.getLogger(__name__)


REGION_SYNTAX = "X,Y=seed:N, X,Y=PICTURE, #RRGGBB=seed:N or #RRGGBB=PICTURE"


@dataclass(frozen=True)
class RegionSpec:
    """`--region WHERE=STYLE`: WHERE is a point X,Y in the input picture's pixels (the blob
    under it) or a colour #RRGGBB of the rough (every pixel of it); STYLE is `seed:N` or a
    reference picture, whose style inside the same region is taken."""

    point: tuple[int, int] | None = None
    color: tuple[int, int, int] | None = None
    seed: int | None = None
    reference: Path | None = None

    @classmethod
    def parse(cls, text: str, max_seed: int) -> RegionSpec:
        """One `--region` value; a malformed one is a ValueError naming what is wrong."""
        where, sep, style = text.partition("=")
        if not sep or not where or not style:
            raise ValueError(f"{text!r} is not WHERE=STYLE ({REGION_SYNTAX})")
        point = color = seed = reference = None
        if m := re.fullmatch(r"(\d+),(\d+)", where):
            point = (int(m[1]), int(m[2]))
        elif m := re.fullmatch(r"#([0-9a-fA-F]{6})", where):
            color = tuple(bytes.fromhex(m[1]))
        else:
            raise ValueError(f"{where!r} is neither a point X,Y nor a colour #RRGGBB")
        if style.startswith("seed:"):
            if not re.fullmatch(r"\d+", style[5:]) or int(style[5:]) > max_seed:
                raise ValueError(f"{style!r}: the seed must be an integer in 0..{max_seed}")
            seed = int(style[5:])
        else:
            reference = Path(style)
        return cls(point, color, seed, reference)

    def mask(self, picture_shape: tuple[int, ...], rough: np.ndarray) -> np.ndarray:
        """The region in `rough` (the input prepared at the model's size, from a picture of
        `picture_shape`): a point is mapped through the centre crop and the resize."""
        if self.color is not None:
            return region_of_color(rough, self.color)
        h, w = picture_shape[:2]
        side = min(h, w)
        x, y = self.point[0] - (w - side) // 2, self.point[1] - (h - side) // 2
        if not (0 <= x < side and 0 <= y < side):
            raise UserError(
                f"--region point {self.point[0]},{self.point[1]} is outside the centred "
                f"{side}×{side} square of the {w}×{h} input that is painted"
            )
        size = rough.shape[0]
        return region_at(rough, x * size // side, y * size // side)


@dataclass(frozen=True)
class GenerateOptions:
    seed: int = 0
    roughen: bool = False
    style: Path | None = None
    regions: tuple[RegionSpec, ...] = field(default_factory=tuple)
    interpolate: int = 0  # K > 1: a strip of K faces from `seed` to `seed_to`
    seed_to: int | None = None
    save_rough: bool = False
    overwrite: bool = False  # replace files already in the output folder (never an input)


def list_inputs(path: Path) -> list[Path]:
    """One image file, or the image files of a folder (sorted, not recursive); anything else (a
    pipe, a device) is refused before it is read."""
    if not path.exists():
        raise UserError(f"input {shown(path)} does not exist")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"input {shown(path)} is not a regular file or folder (a pipe or a device)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"folder {shown(path)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def targets(path: Path, out_dir: Path, opts: GenerateOptions) -> list[Path]:
    """The files written for one input: the face (or strip), then the rough if asked."""
    face = out_dir / (f"{path.stem}_interp.png" if opts.interpolate > 1 else f"{path.stem}.png")
    return [face, out_dir / f"{path.stem}_rough.png"] if opts.save_rough else [face]


def check_out_dir(out_dir: Path, inputs: list[Path], opts: GenerateOptions) -> None:
    """A writable folder; no two outputs with one name, no output that would replace an input,
    and none that would replace a file already there unless `opts.overwrite` (nothing the user
    gave us is ever overwritten unasked)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {shown(out_dir)} is a file; give a folder for the faces")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the --out folder {shown(out_dir)}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to the --out folder {shown(out_dir)}: permission denied")
    written: dict[Path, Path] = {}
    for path in inputs:
        for target in targets(path, out_dir, opts):
            other = written.setdefault(target.resolve(), path)
            if other != path:
                raise UserError(
                    f"{shown(other)} and {shown(path)} would both write {shown(target.name)}:"
                    " rename one of them"
                )
    references = [opts.style, *(r.reference for r in opts.regions)]
    given = {p.resolve() for p in [*inputs, *(r for r in references if r)]}
    for target in written:
        if target in given:
            raise UserError(
                f"refusing to overwrite the input {shown(target)}: choose another --out folder"
            )
    outputs = [target for path in inputs for target in targets(path, out_dir, opts)]
    existing = [target for target in outputs if os.path.lexists(target)]
    folders = [t for t in existing if t.is_dir()]
    if folders:
        raise UserError(f"{shown(folders[0])} is a folder: choose another --out folder")
    if existing and not opts.overwrite:
        more = f" (and {len(existing) - 1} more of the files to write)" if len(existing) > 1 else ""
        raise UserError(
            f"{shown(existing[0])} already exists{more}: choose another --out folder, or add "
            "--overwrite to replace it"
        )


def generate(
    painter: Painter, inputs: list[Path], out_dir: Path, opts: GenerateOptions
) -> list[Path]:
    """Write one face (or one strip) per input, and its rough if asked; returns the files
    written. Unreadable inputs are reported at the end."""
    check_out_dir(out_dir, inputs, opts)
    if len(opts.regions) + 1 > MAX_CODES:
        raise UserError(f"at most {MAX_CODES - 1} --region options")
    if opts.regions and not painter.model.arch.z_every_layer:
        raise UserError("--region needs a model whose style reaches every layer (z_every_layer)")
    z = painter.style_z(read_rgb(opts.style)) if opts.style else None
    pictures = {r.reference: read_rgb(r.reference) for r in opts.regions if r.reference}
    seed_to = opts.seed_to if opts.seed_to is not None else opts.seed + 1
    written, failed = [], []
    per_input = max(1, opts.interpolate)
    bar = tqdm(total=len(inputs) * per_input, desc="generate", unit="face", disable=None)
    for path in inputs:
        try:
            picture = read_rgb(path)
            rough = painter.prepare(picture, opts.roughen)
            regions = region_styles(painter, opts.regions, picture.shape, rough, pictures)
        except UserError as e:
            log.error("%s", e)
            failed.append(path)
            bar.update(per_input)
            continue
        face_path, *rough_path = targets(path, out_dir, opts)
        if opts.interpolate > 1:
            faces = []
            for face in painter.strip(rough, opts.seed, seed_to, opts.interpolate):
                faces.append(face)
                bar.update()
            save_png(face_path, np.concatenate(faces, axis=1))
        else:
            save_png(face_path, painter.face(rough, opts.seed, z, regions))
            bar.update()
        if rough_path:
            save_png(rough_path[0], rough)
        written += [face_path, *rough_path]
        log.info("%s → %s", shown(path), shown(face_path))
    bar.close()
    if failed:
        raise UserError(
            f"{len(failed)} of {len(inputs)} inputs could not be painted "
            f"({', '.join(shown(p) for p in failed)}); {len(written)} files were written"
        )
    return written


def region_styles(
    painter: Painter,
    specs: tuple[RegionSpec, ...],
    picture_shape: tuple[int, ...],
    rough: np.ndarray,
    pictures: dict[Path, np.ndarray],
) -> list[RegionStyle]:
    """Each `--region`'s mask in this rough and its code: a seed's z, or the reference
    picture's style inside the same region."""
    styles = []
    for spec in specs:
        mask = spec.mask(picture_shape, rough)
        if spec.reference is not None:
            z = painter.style_z(pictures[spec.reference], mask)
        else:
            z = painter.z_for_seed(spec.seed)
        styles.append(RegionStyle(mask, z))
    return styles
