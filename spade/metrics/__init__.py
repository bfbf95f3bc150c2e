"""Image-quality metrics: FID/KID on Inception features, and paired L1/PSNR/SSIM."""

from spade.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from spade.metrics.inception import (
    INCEPTION_ID,
    extract_features,
    load_inception,
    tf_bilinear_resize,
)
from spade.metrics.kid import kernel_inception_distance
from spade.metrics.paired import paired_metrics

__all__ = [
    "INCEPTION_ID",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_inception",
    "paired_metrics",
    "tf_bilinear_resize",
]
