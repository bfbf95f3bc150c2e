"""Evaluation: FID/KID and paired L1/PSNR/SSIM of the generated test faces, with the rough itself
as the baseline the model must beat; style diversity and, with style labels, style control.

FID from fewer than `FID_MIN_IMAGES` images is biased upward and not comparable across test-set
sizes; the metrics file says so, and KID (unbiased) is the number to compare on small sets.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spade import paths
from spade.checkpoint import load_generator
from spade.config import DistillConfig, EvaluateConfig, FeaturesConfig, TrainConfig
from spade.files import atomic_paths, json_bytes
from spade.images import comparison_grid, load_image_array, open_image_array, png_bytes
from spade.inference import generate_faces, paired_faces
from spade.metrics.diversity import mean_pairwise_l1
from spade.metrics.fid import fid_from_features
from spade.metrics.inception import INCEPTION_ID, extract_features
from spade.metrics.kid import kernel_inception_distance
from spade.metrics.paired import paired_metrics, worse_than_rough
from spade.metrics.reference import load_reference
from spade.metrics.style import (
    StyleProbe,
    agreement,
    control_chance,
    load_probe,
    regional_control,
    spread,
)
from spade.networks import FaceModel
from spade.style_labels import manifest_styles

log = logging.getLogger(__name__)

FID_MIN_IMAGES = 2048


@dataclass
class HeldOut:
    """The held-out test split and what it is measured against."""

    roughs: np.ndarray
    real: np.ndarray
    reference: dict[str, np.ndarray]  # Inception features of the real faces
    styles: dict[str, list[str]]  # {factor: level of each real face}; empty without labels
    probe: StyleProbe | None = None
    regions: np.ndarray | None = None  # (N, S, S) where each factor is drawn, when known


def load_held_out(device: torch.device) -> HeldOut:
    """The test split of the pipeline's data, its reference features and, when the features
    stage fitted one (the data has style labels), the style probe."""
    probe, regions = paths.STYLE_PROBE, paths.TEST_REGIONS
    return HeldOut(
        roughs=load_image_array(paths.split_array(paths.ROUGHS, "test")),
        real=load_image_array(paths.split_array(paths.SAMPLED, "test")),
        reference=load_reference(paths.REFERENCE),
        styles=manifest_styles(paths.MANIFEST, "test"),
        probe=load_probe(probe, device) if probe.is_file() else None,
        regions=np.load(regions, allow_pickle=False) if regions.is_file() else None,
    )


@dataclass(frozen=True)
class Settings:
    """How to measure: the evaluate and features parameters, and the device."""

    cfg: EvaluateConfig
    features: FeaturesConfig
    device: torch.device


def image_metrics(
    images: np.ndarray, paired: np.ndarray, test: HeldOut, s: Settings
) -> dict[str, float]:
    """FID and KID of one set of faces (generated, or the roughs), and the paired metrics of
    `paired` (the same faces, or the ones painted in each real face's own style)."""
    feats = extract_features(images, device=s.device, batch_size=s.features.batch_size)
    kid_mean, kid_std = kid(feats, test, s)
    metrics = {
        "fid": fid_from_features(feats, test.reference["features"]),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    } | paired_metrics(paired, test.real)
    return {k: round(float(v), 6) for k, v in metrics.items()}


def kid(features: np.ndarray, test: HeldOut, s: Settings) -> tuple[float, float]:
    """KID (mean, std over subsets) of faces' Inception features against the real test faces."""
    return kernel_inception_distance(
        features,
        test.reference["features"],
        n_subsets=s.cfg.kid_subsets,
        subset_size=s.cfg.kid_subset_size,
        seed=s.cfg.seed,
    )


def baseline_metrics(test: HeldOut, s: Settings) -> dict[str, Any]:
    """What does not depend on the model: the roughs' own scores (`*_rough`), the size of the
    test set, and how visible each style factor is (the probe on the real faces)."""
    rough = image_metrics(test.roughs, test.roughs, test, s)
    metrics = {f"{k}_rough": v for k, v in rough.items()}
    n = len(test.roughs)
    metrics |= {"n_images": n, "fid_reliable": n >= FID_MIN_IMAGES, "feature_network": INCEPTION_ID}
    if n < FID_MIN_IMAGES:
        metrics["note"] = (
            f"FID from {n} < {FID_MIN_IMAGES} images is biased upward and not comparable "
            "across test-set sizes; compare runs by KID"
        )
    if test.probe is not None:
        chance = control_chance(test.styles)
        metrics |= {
            "style_probe_accuracy": test.probe.accuracy,
            "style_control_chance": chance,
            "style_spread_data": {f: round(1 - v, 4) for f, v in chance.items()},
        }
    return metrics


def model_metrics(
    model: FaceModel,
    test: HeldOut,
    s: Settings,
    *,
    l1_rough: float,
    out: np.ndarray | None = None,
    section: str,
) -> dict[str, Any]:
    """Every metric of one generator: FID and KID of its faces from `cfg.seed` (written into
    `out`); the paired metrics of `paired_faces` (in each real face's own style), and the L1 of
    the seed's faces too (`l1_seed`: a random style each); diversity over `diversity_k` seeds;
    style spread and control. `section` trained the model (named if it is worse than the
    roughs)."""
    cfg = s.cfg
    faces = generate_faces(
        model, test.roughs, seed=cfg.seed, batch_size=cfg.batch_size, out=out, progress=True
    )
    paired = paired_faces(model, test.roughs, test.real, seed=cfg.seed, batch_size=cfg.batch_size)
    metrics: dict[str, Any] = image_metrics(faces, paired, test, s)
    metrics["l1_seed"] = round(paired_metrics(faces, test.real)["l1"], 6)
    metrics["worse_than_rough"] = worse_than_rough(metrics["l1"], l1_rough, section)
    metrics |= style_metrics(model, faces, test, cfg)
    if model.encoder is not None and test.probe is not None and test.regions is not None:
        metrics |= regional_metrics(model, test, s)
    return metrics


def style_metrics(
    model: FaceModel, faces: np.ndarray, test: HeldOut, cfg: EvaluateConfig
) -> dict[str, Any]:
    """Diversity (mean pairwise L1 of k faces per rough from seeds seed…seed+k−1; `faces` is
    the first) and, with the probe, how often another seed changes each factor (spread). With a
    style encoder: faces styled by k other test faces (`diversity_style`) and, with the probe,
    how often a face takes its reference's level (`style_control`)."""
    variants = [faces] + [
        generate_faces(model, test.roughs, seed=cfg.seed + i, batch_size=cfg.batch_size)
        for i in range(1, cfg.diversity_k)
    ]
    metrics: dict[str, Any] = {"diversity": round(mean_pairwise_l1(variants), 6)}
    if test.probe is not None:
        metrics["style_spread"] = spread([test.probe.predict(v) for v in variants])
    if model.encoder is None:
        return metrics
    styled = [
        generate_faces(
            model,
            test.roughs,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            styles=np.roll(test.real, -i, axis=0),  # face j = i + shift: another identity
        )
        for i in range(1, cfg.diversity_k + 1)
    ]
    metrics["diversity_style"] = round(mean_pairwise_l1(styled), 6)
    if test.probe is not None:
        references = {f: list(np.roll(v, -1)) for f, v in test.styles.items()}
        control = agreement(test.probe.predict(styled[0]), references, test.probe.levels)
        metrics["style_control"] = control
        log.info("style control %s (chance %s)", control, control_chance(test.styles))
    return metrics


def regional_metrics(model: FaceModel, test: HeldOut, s: Settings) -> dict[str, Any]:
    """Style per region: for each factor, every test rough painted in the style of test face
    j + 1 (`A`) inside that factor's region and of face j + 2 (`B`) everywhere else; the probe
    reads them (`style_control_regional`: A's level for the factor, `…_kept`: B's for the
    others). Seams show in `kid_regional`, the KID of these faces (face j from factor j mod F),
    beside `kid_styled`, the KID of the faces in A's style alone."""
    cfg, factors = s.cfg, list(test.styles)
    inside, outside = (np.roll(test.real, -k, axis=0) for k in (1, 2))
    generate = functools.partial(
        generate_faces, model, test.roughs, seed=cfg.seed, batch_size=cfg.batch_size
    )
    mixed = {
        f: generate(styles=outside, region=(inside, test.regions == i + 1))
        for i, f in tqdm(list(enumerate(factors)), desc="regional styles", unit="factor")
    }
    predicted = {f: test.probe.predict(faces) for f, faces in mixed.items()}
    levels = {k: {f: list(np.roll(v, -k)) for f, v in test.styles.items()} for k in (1, 2)}
    took, kept = regional_control(predicted, levels[1], levels[2], test.probe.levels)
    log.info("regional style control %s, kept outside %s", took, kept)
    one_each = np.stack([mixed[factors[j % len(factors)]][j] for j in range(len(test.roughs))])
    features = extract_features(
        np.concatenate([one_each, generate(styles=inside)]),
        device=s.device,
        batch_size=s.features.batch_size,
    )
    n = len(one_each)
    return {
        "style_control_regional": took,
        "style_control_regional_kept": kept,
        "kid_regional": round(float(kid(features[:n], test, s)[0]), 6),
        "kid_styled": round(float(kid(features[n:], test, s)[0]), 6),
    }


def evaluate(s: Settings) -> dict[str, Any]:
    """The `evaluate` stage: the teacher's faces and scores, then the roughs' (the baseline) and
    the student's (`student`), written with a grid of the first faces all together, or not at
    all. Returns the metrics."""
    teacher, _ = load_generator(paths.GENERATOR, s.device)
    test = load_held_out(s.device)
    outputs = [paths.EVAL / "generated.npy", paths.EVAL / "grid.png", paths.EVAL_METRICS]
    with atomic_paths(outputs) as (generated_path, grid_path, metrics_path):
        generated = open_image_array(generated_path, test.roughs.shape)
        baseline = baseline_metrics(test, s)
        l1_rough = baseline["l1_rough"]
        metrics = model_metrics(
            teacher, test, s, l1_rough=l1_rough, out=generated, section=TrainConfig.SECTION
        )
        metrics |= baseline
        student, _ = load_generator(paths.STUDENT, s.device)
        metrics["student"] = model_metrics(
            student, test, s, l1_rough=l1_rough, section=DistillConfig.SECTION
        )
        generated.flush()
        grid = comparison_grid(test.roughs, generated, test.real, s.cfg.grid_rows)
        grid_path.write_bytes(png_bytes(grid))
        metrics_path.write_bytes(json_bytes(metrics))
    return metrics
