"""Stage `evaluate`: generate the test faces with the EMA generator and score them."""

from pathlib import Path

from spade.checkpoint import load_generator
from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.evaluate import diversity_metrics, evaluate_images
from spade.files import atomic_paths, json_bytes
from spade.images import comparison_grid, load_image_array, open_image_array, png_bytes
from spade.inference import generate_faces
from spade.metrics import load_reference

MODEL = Path("models/generator.pt")
ROUGHS, REAL = Path("data/roughs/test.npy"), Path("data/sampled/test.npy")
REFERENCE = Path("data/features/test.npz")
OUT = Path("data/eval")
METRICS = Path("metrics/eval.json")


def main() -> None:
    params = load_params()
    cfg, fcfg = params.evaluate, params.features
    device = resolve_device(fcfg.device)
    model, _ = load_generator(MODEL, device)
    roughs, real = load_image_array(ROUGHS), load_image_array(REAL)
    outputs = [OUT / "generated.npy", OUT / "grid.png", METRICS]
    with atomic_paths(outputs) as (generated_path, grid_path, metrics_path):
        generated = open_image_array(generated_path, roughs.shape)
        generate_faces(
            model, roughs, seed=cfg.seed, batch_size=cfg.batch_size, out=generated, progress=True
        )
        generated.flush()
        grid_path.write_bytes(png_bytes(comparison_grid(roughs, generated, real, cfg.grid_rows)))
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
        metrics |= diversity_metrics(
            model,
            roughs,
            real,
            generated,
            k=cfg.diversity_k,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
        )
        metrics_path.write_bytes(json_bytes(metrics))


if __name__ == "__main__":
    run(main)
