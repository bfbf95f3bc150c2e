"""Where the pipeline reads and writes, relative to the repository root: the one list of them.

`dvc.yaml` names the same paths as its stages' deps and outs; tests/test_paths.py checks that the
two agree. Training's own set, which tests relocate, is `spade.train.TrainPaths`, built from these.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
DEMO_ZIP = DATA / "demo" / "faces.zip"  # stage demo
SAMPLED = DATA / "sampled"  # stage sample: {train,test}.npy, manifest.csv, report.json
MANIFEST = SAMPLED / "manifest.csv"
TEST_REGIONS = SAMPLED / "test_regions.npy"  # where each style factor is drawn, when known
ROUGHS = DATA / "roughs"  # stage roughen: {train,test}.npy
FEATURES = DATA / "features"  # stage features
REFERENCE = FEATURES / "test.npz"  # Inception features of the real test faces
STYLE_PROBE = FEATURES / "style_probe.pt"  # only with style labels
EVAL = DATA / "eval"  # stage evaluate: generated.npy, grid.png
SPLITS = ("train", "test")

GENERATOR = Path("models/generator.pt")  # the teacher, with the style encoder
DISCRIMINATOR = Path("models/discriminator.pt")  # distillation starts its own from it
STUDENT = Path("models/student.pt")
TRAIN_LIVE, DISTILL_LIVE = Path("dvclive"), Path("dvclive_distill")
TRAIN_METRICS, DISTILL_METRICS = Path("metrics/train.json"), Path("metrics/distill.json")
EVAL_METRICS = Path("metrics/eval.json")

# Local files DVC does not track: a run resumes from its checkpoint.
TRAIN_CHECKPOINT = Path("models/checkpoint.pt")
DISTILL_CHECKPOINT = Path("models/distill_checkpoint.pt")
UNTRACKED = (TRAIN_CHECKPOINT, DISTILL_CHECKPOINT)


def split_array(folder: Path, split: str) -> Path:
    """The packed images of one split in `folder` (SAMPLED or ROUGHS)."""
    return folder / f"{split}.npy"
