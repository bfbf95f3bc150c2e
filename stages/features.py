"""Stage `features`: what evaluation measures generated faces against, from the real data alone.

- Inception features and statistics of the real test images (the FID/KID reference);
- with style labels in the manifest, the style probe fitted on the real training faces and
  scored on the test faces (`spade.metrics.style`).
Depends only on the data, the feature code and the feature parameters, so training changes
never redo it.
"""

from spade import paths
from spade.config import load_params
from spade.console import run
from spade.devices import resolve_device
from spade.files import atomic_paths
from spade.images import load_image_array
from spade.metrics.inception import extract_features
from spade.metrics.reference import save_reference
from spade.metrics.style import fit_style_probe, save_probe
from spade.numerics import pin_cpu_numerics
from spade.style_labels import manifest_styles


def main() -> None:
    params = load_params()
    cfg = params.features
    device = resolve_device(cfg.device)
    pin_cpu_numerics(params.cpu, device)
    test = load_image_array(paths.split_array(paths.SAMPLED, "test"))
    labels = {split: manifest_styles(paths.MANIFEST, split) for split in paths.SPLITS}
    outputs = [paths.REFERENCE] + ([paths.STYLE_PROBE] if labels["train"] else [])
    with atomic_paths(outputs) as (reference, *probe):
        save_reference(reference, extract_features(test, device=device, batch_size=cfg.batch_size))
        if probe:
            train = load_image_array(paths.split_array(paths.SAMPLED, "train"))
            fitted = fit_style_probe(
                train, labels["train"], test, labels["test"], seed=cfg.seed, device=device
            )
            save_probe(probe[0], fitted)


if __name__ == "__main__":
    run(main)
