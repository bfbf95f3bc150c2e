"""Paired metrics (every prediction has its ground truth): L1, PSNR and SSIM."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from spade.errors import UserError

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    for name, images in (("pred", pred), ("target", target)):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise UserError(f"{name} must be a uint8 numpy array")
        if images.ndim != 4 or images.shape[3] not in (1, 3):
            raise UserError(f"{name} must be NHWC with 1 or 3 channels, got {images.shape}")
    if pred.shape != target.shape:
        raise UserError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if len(pred) == 0:
        raise UserError("no images to compare")
    if min(pred.shape[1:3]) < SSIM_KERNEL_SIZE:
        raise UserError(f"images must be at least {SSIM_KERNEL_SIZE} px for SSIM, got {pred.shape}")


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float64 NCHW in [0, 1]."""
    x = torch.from_numpy(np.array(images, copy=True))  # memmaps may be read-only
    return x.permute(0, 3, 1, 2).double() / 255.0


def psnr_db(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for MAX = 1, capped at PSNR_CAP_DB (identical images would give inf)."""
    floor = 10.0 ** (-PSNR_CAP_DB / 10.0)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(floor))


def _batch_sums(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float]:
    """Sums over the batch of per-image L1, PSNR and SSIM."""
    diff = pred - target
    l1 = diff.abs().mean(dim=(1, 2, 3))
    psnr = psnr_db(diff.square().mean(dim=(1, 2, 3)))
    ssim = structural_similarity_index_measure(
        pred.float(),
        target.float(),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        data_range=1.0,
        reduction="none",
    )
    return float(l1.sum()), float(psnr.sum()), float(ssim.double().sum())


def paired_metrics(
    pred: np.ndarray, target: np.ndarray, *, batch_size: int = 64
) -> dict[str, float]:
    """Compare predictions with their ground truth, image by image.

    Args:
        pred: uint8 NHWC images (a np.memmap is read batch by batch).
        target: uint8 NHWC images of the same shape.
        batch_size: images per batch, to bound memory.

    Returns:
        `l1`: mean absolute error on the [0, 1] scale; `psnr`: mean over images of the
        per-image PSNR in dB with MAX = 1, each capped at 100 dB so identical images give
        100 rather than inf; `ssim`: mean over images of SSIM (Gaussian window 11,
        sigma 1.5, data range 1).
    """
    _check_pair(pred, target)
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    totals = np.zeros(3)
    with torch.inference_mode():
        for start in range(0, len(pred), batch_size):
            stop = start + batch_size
            totals += _batch_sums(_to_unit(pred[start:stop]), _to_unit(target[start:stop]))
    l1, psnr, ssim = totals / len(pred)
    assert math.isfinite(psnr)
    return {"l1": float(l1), "psnr": float(psnr), "ssim": float(ssim)}


def worse_than_rough(l1: float, l1_rough: float, section: str) -> bool:
    """Are the generated faces further from the real ones than the roughs they start from?

    Then the model has learnt nothing useful (often: training diverged): say so loudly, naming
    the learning rates of the `section` that trained it (`LoopConfig.SECTION`: the teacher's or
    the student's).
    """
    worse = l1 >= l1_rough
    if worse:
        log.warning(
            "!!! The generated faces are WORSE than the roughs they start from (L1 %.4f vs %.4f):"
            " training probably diverged; try a lower %s.lr_g / %s.lr_d",
            l1,
            l1_rough,
            section,
            section,
        )
    return worse
