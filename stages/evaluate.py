"""Stage `evaluate`: generate the test faces with the teacher (the EMA generator) and with its
distilled student, and score both; the student's numbers are the `student` block."""

from pathlib import Path

from spade.checkpoint import load_generator
from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.evaluate import HeldOut, Settings, baseline_metrics, model_metrics
from spade.files import atomic_paths, json_bytes
from spade.images import comparison_grid, load_image_array, open_image_array, png_bytes
from spade.metrics.reference import load_reference
from spade.metrics.style import load_probe
from spade.numerics import pin_cpu_numerics
from spade.style_labels import manifest_styles

MODEL, STUDENT = Path("models/generator.pt"), Path("models/student.pt")
ROUGHS, REAL = Path("data/roughs/test.npy"), Path("data/sampled/test.npy")
MANIFEST = Path("data/sampled/manifest.csv")
FEATURES = Path("data/features")
OUT = Path("data/eval")
METRICS = Path("metrics/eval.json")


def main() -> None:
    params = load_params()
    settings = Settings(params.evaluate, params.features, resolve_device(params.features.device))
    pin_cpu_numerics(params.cpu, settings.device)
    model, _ = load_generator(MODEL, settings.device)
    probe_file = FEATURES / "style_probe.pt"
    test = HeldOut(
        roughs=load_image_array(ROUGHS),
        real=load_image_array(REAL),
        reference=load_reference(FEATURES / "test.npz"),
        styles=manifest_styles(MANIFEST, "test"),
        probe=load_probe(probe_file, settings.device) if probe_file.is_file() else None,
    )
    outputs = [OUT / "generated.npy", OUT / "grid.png", METRICS]
    with atomic_paths(outputs) as (generated_path, grid_path, metrics_path):
        generated = open_image_array(generated_path, test.roughs.shape)
        metrics = baseline_metrics(test, settings)
        l1_rough = metrics["l1_rough"]
        metrics = model_metrics(model, test, settings, l1_rough=l1_rough, out=generated) | metrics
        student, _ = load_generator(STUDENT, settings.device)
        metrics["student"] = model_metrics(
            student, test, settings, l1_rough=l1_rough, section="distill"
        )
        generated.flush()
        grid = comparison_grid(test.roughs, generated, test.real, params.evaluate.grid_rows)
        grid_path.write_bytes(png_bytes(grid))
        metrics_path.write_bytes(json_bytes(metrics))


if __name__ == "__main__":
    run(main)
