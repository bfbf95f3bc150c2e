"""Image-quality metrics: FID/KID on Inception features, and paired L1/PSNR/SSIM."""

from spade.metrics.diversity import mean_pairwise_l1
from spade.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from spade.metrics.inception import (
    INCEPTION_ID,
    extract_features,
    load_inception,
    tf_bilinear_resize,
)
from spade.metrics.kid import kernel_inception_distance
from spade.metrics.paired import paired_metrics, worse_than_rough
from spade.metrics.reference import load_reference, save_reference

__all__ = [
    "INCEPTION_ID",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_inception",
    "load_reference",
    "mean_pairwise_l1",
    "paired_metrics",
    "save_reference",
    "tf_bilinear_resize",
    "worse_than_rough",
]
