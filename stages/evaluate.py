"""Stage `evaluate`: generate the test faces with the EMA generator and score them."""

import json
from pathlib import Path

from spade.checkpoint import load_generator
from spade.cli import run
from spade.config import EvaluateConfig, FeaturesConfig, load_section
from spade.evaluate import (
    evaluate_images,
    generate_faces,
    load_reference,
    resolve_device,
    save_grid,
)
from spade.images import atomic_path, load_image_array, open_image_array

MODEL = Path("models/generator.pt")
ROUGHS, REAL = Path("data/roughs/test.npy"), Path("data/sampled/test.npy")
REFERENCE = Path("data/features/test.npz")
OUT = Path("data/eval")
METRICS = Path("metrics/eval.json")


def main() -> None:
    cfg = load_section("evaluate", EvaluateConfig)
    fcfg = load_section("features", FeaturesConfig)
    device = resolve_device(fcfg.device)
    model, _ = load_generator(MODEL, device)
    roughs, real = load_image_array(ROUGHS), load_image_array(REAL)
    OUT.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT / "generated.npy") as tmp:
        generated = open_image_array(tmp, roughs.shape)
        generate_faces(model, roughs, seed=cfg.seed, batch_size=cfg.batch_size, out=generated)
        generated.flush()
    generated = load_image_array(OUT / "generated.npy")
    save_grid(OUT / "grid.png", roughs, generated, real, cfg.grid_rows)
    metrics = evaluate_images(
        generated,
        roughs,
        real,
        load_reference(REFERENCE),
        device=device,
        feature_batch=fcfg.batch_size,
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
        seed=cfg.seed,
    )
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
