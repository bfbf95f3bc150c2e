"""How far a stroke changes the face: why an exact incremental redraw recomputes a third of it.

For a preset's student (randomly initialised, fixed seed; `--model teacher` for the teacher, or
a trained `--model-file`), a page is painted stroke by stroke (`spade.strokes`, each changing
`--stroke` of the canvas) and every face is a full redraw. For each stroke it prints, beyond
distances d from the changed pixels (1/32 to 1/4 of the side: 8 to 64 px at 256): the largest
change of the face there in levels of 255 and the share of those pixels that changed by more
than one level; and per block, the share of its output that changed by more than 1 % of the
block's mean magnitude. What `spade.incremental` must recompute is what changed, so these are
its floor: a redraw that skipped the far field would be off by more than a level wherever this
finds one. Rows go to bench/results/stroke_reach.json.

    python bench/stroke_reach.py                      # full preset student, 3 % strokes
    python bench/stroke_reach.py --stroke 0.01 --trials 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from spade.checkpoint import load_generator  # noqa: E402
from spade.config import Recipe, load_params  # noqa: E402
from spade.data import to_model  # noqa: E402
from spade.distill import student_arch  # noqa: E402
from spade.inference import seeded  # noqa: E402
from spade.networks import FaceModel  # noqa: E402
from spade.strokes import brush_stroke  # noqa: E402
from spade.studio.palette import default_rough, palette  # noqa: E402

RESULTS = ROOT / "bench/results/stroke_reach.json"
FRACTIONS = (32, 16, 8, 4)  # distances: 1/32, 1/16, 1/8 and 1/4 of the side (8 … 64 px at 256)
CPU = torch.device("cpu")


def model_of(preset: Path, which: str, model_file: Path | None) -> FaceModel:
    if model_file is not None:
        return load_generator(model_file, CPU)[0].eval().requires_grad_(False)
    params = load_params(preset)
    arch = params.train.arch
    if which == "student":
        arch = student_arch(arch, params.distill)
    torch.manual_seed(0)
    return FaceModel(arch, params.sample.image_size).eval().requires_grad_(False)


def faces_and_blocks(model: FaceModel, rough: np.ndarray, z, noise):
    """The face of `rough` in levels (S, S, 3) and every block's output."""
    outs: list[torch.Tensor] = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.generator.blocks
    ]
    with torch.inference_mode():
        face = model.generator(to_model(rough[None], CPU), z, noise=noise)
    for h in hooks:
        h.remove()
    return face[0] * 127.5, outs


def reach(changed: np.ndarray, before, after, distances: list[int]) -> dict:
    """The change of the face beyond each distance from the changed pixels, and per block."""
    delta = (after[0] - before[0]).abs().amax(0)
    mask = torch.from_numpy(changed)[None, None].float()
    row: dict = {"changed": round(float(changed.mean()), 4)}
    for d in distances:
        near = F.max_pool2d(mask, 2 * d + 1, 1, d)[0, 0] > 0
        far = delta[~near]
        row[f"beyond_{d}px"] = {
            "share_of_face": round(float((~near).float().mean()), 3),
            "max_levels": round(float(far.max()), 2) if far.numel() else 0.0,
            "share_over_1_level": round(float((far > 1).float().mean()), 4) if far.numel() else 0.0,
        }
    row["blocks_changed_over_1pct"] = [
        round(float(((a - b).abs().amax(1) > 0.01 * b.abs().mean()).float().mean()), 3)
        for b, a in zip(before[1], after[1], strict=True)
    ]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", type=Path, default=ROOT / "presets/full.yaml")
    p.add_argument("--model", choices=("student", "teacher"), default="student")
    p.add_argument(
        "--model-file", type=Path, help="a trained model instead (e.g. models/student.pt)"
    )
    p.add_argument("--stroke", type=float, default=0.03, help="share of the canvas per stroke")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model = model_of(args.preset, args.model, args.model_file)
    size = model.image_size
    distances = [size // k for k in FRACTIONS]
    colours = [c.rgb for c in palette(Recipe())]
    rough = default_rough(size, palette(Recipe()))
    stream = seeded(0)
    z = stream.randn(1, model.arch.z_dim, device=CPU)
    noise = model.generator.draw_noise(stream, 1, CPU)
    rng = np.random.default_rng(0)
    rows = []
    before = faces_and_blocks(model, rough, z, noise)
    name = args.model_file or f"{args.model} of {args.preset.name} (random weights)"
    print(f"{name}, {size} px, {args.stroke:.0%} strokes")
    for trial in range(args.trials):
        new = brush_stroke(rough, args.stroke, colours[2 + trial % (len(colours) - 2)], rng)
        after = faces_and_blocks(model, new, z, noise)
        row = reach((new != rough).any(-1), before, after, distances)
        rows.append(row)
        far = "  ".join(
            f"≥{d}px: max {row[f'beyond_{d}px']['max_levels']:5.2f} lv, "
            f"{row[f'beyond_{d}px']['share_over_1_level']:6.2%} >1 lv"
            for d in distances
        )
        blocks = " ".join(f"{v:.2f}" for v in row["blocks_changed_over_1pct"])
        print(f"stroke {trial}: {far}\n          blocks changed >1%: {blocks}")
        rough, before = new, after
    d = distances[2]
    over = [r[f"beyond_{d}px"]["max_levels"] > 1 for r in rows]
    print(f"strokes changing the face by > 1 level beyond {d} px: {sum(over)} of {len(rows)}")
    out = {"model": str(name), "px": size, "stroke": args.stroke}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out | {"rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
