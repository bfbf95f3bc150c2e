"""Draw docs/regions.png: one test rough with her hair restyled three ways, the rest unchanged.

    python docs/regions.py                       # after `make repro`: the student, test rough 0
    python docs/regions.py --model models/generator.pt --index 5 --out out/regions.png

Row 1: the rough, her face in the style of a test face with plain hair, then the same face with
only the hair restyled: by a test face with hair strands, by another one pooled inside the hair
(its hair's style), and by seed `--hair-seed`; each reference is shown small in its face's
corner. Row 2: where each face differs from the first by more than 8 levels in 255 (white), so
"the rest unchanged" can be checked by eye. The hair is the rough's blobs that are mostly hair
in the demo's region map (the bangs and the hair behind: a painter clicks each).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from spade import paths
from spade.images import load_image_array, png_bytes
from spade.painter import Painter, RegionStyle, default_model, load_painter
from spade.regions import components
from spade.style_labels import manifest_styles
from spade.synthetic import region_value

SCALE, CHANGED = 4, 8  # pixels per model pixel; levels in 255 that count as a change
SEED = 1  # the noise of every face


def hair_blobs(rough: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """The (S, S) mask of the rough's blobs that are mostly hair in the demo's region map (the
    bangs and the hair behind: what a painter would click, one blob after the other)."""
    labels = components(rough)
    hair = np.bincount(labels[regions == region_value("hair")], minlength=labels.max() + 1)
    mostly = hair > 0.5 * np.bincount(labels.ravel())
    return mostly[labels]


def restyled(
    painter: Painter, rough: np.ndarray, base: torch.Tensor, hair: np.ndarray, styles: list
) -> list[np.ndarray]:
    """The face in the `base` style, then the same face with only `hair` in each style."""
    plain = painter.face(rough, SEED, base)
    return [plain] + [painter.face(rough, SEED, base, [RegionStyle(hair, z)]) for z in styles]


def with_thumb(face: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """The face, with the reference its style came from small in its lower right corner."""
    if reference is None:
        return face
    side = face.shape[0] // 3
    out = face.copy()
    out[-side:, -side:] = cv2.resize(reference, (side, side), interpolation=cv2.INTER_AREA)
    return out


def picture(rough: np.ndarray, faces: list[np.ndarray], references: list) -> np.ndarray:
    """Row 1: rough and faces (references in the corner); row 2: where each face changed."""
    top = np.concatenate([rough, *map(with_thumb, faces, references)], axis=1)
    diffs = [
        np.repeat((np.abs(f.astype(int) - faces[0]).max(2) > CHANGED)[..., None] * 255, 3, 2)
        for f in faces
    ]
    bottom = np.concatenate([np.zeros_like(rough), *diffs], axis=1).astype(np.uint8)
    grid = np.concatenate([top, bottom], axis=0)
    return cv2.resize(grid, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)


def first(levels: list[str], level: str, skip: int = 0) -> int:
    return [i for i, v in enumerate(levels) if v == level][skip]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, help="default: what the studio picks on a CPU")
    p.add_argument("--out", type=Path, default=Path("docs/regions.png"))
    p.add_argument("--index", type=int, default=0, help="the test rough")
    p.add_argument("--hair-seed", type=int, default=5)
    args = p.parse_args()

    device = torch.device("cpu")
    painter = load_painter(args.model or default_model(device), device, "torch")
    rough = load_image_array(paths.split_array(paths.ROUGHS, "test"))[args.index]
    real = load_image_array(paths.split_array(paths.SAMPLED, "test"))
    hair_levels = manifest_styles(paths.MANIFEST, "test")["hair"]
    base_ref = real[first(hair_levels, "plain")]
    strands = [real[first(hair_levels, "strands", k)] for k in (0, 1)]
    hair = hair_blobs(rough, np.load(paths.TEST_REGIONS)[args.index])
    styles = [painter.style_z(strands[0]), painter.style_z(strands[1], hair)]
    styles.append(painter.z_for_seed(args.hair_seed))
    faces = restyled(painter, rough, painter.style_z(base_ref), hair, styles)
    args.out.write_bytes(png_bytes(picture(rough, faces, [base_ref, *strands, None])))
    change = [np.abs(f.astype(int) - faces[0]).max(2) for f in faces[1:]]
    inside = ", ".join(f"{c[hair].mean():.1f}" for c in change)
    outside = ", ".join(f"{c[~hair].mean():.2f}" for c in change)
    print(f"wrote {args.out}: mean change inside the hair {inside}; outside {outside} (levels)")


if __name__ == "__main__":
    main()
