"""The styles a studio request asks for, checked against the model and its rough.

A request names regions by points (`uploads.Point`): each is resolved to the blob under it in
the rough the request holds (`spade.regions.region_at`), so a region follows its blob as the
person repaints it. Every mistake is an `ApiError` (422) naming the field, e.g. `regions.2`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spade.errors import UserError
from spade.painter import Painter, RegionStyle
from spade.regions import MAX_CODES, region_at
from spade.studio.uploads import ApiError, Point, Region


def max_regions(painter: Painter) -> int:
    """Regions one face may restyle: none when the model's style reaches only its first layer."""
    return MAX_CODES - 1 if painter.model.arch.z_every_layer else 0


def require_regions(painter: Painter, where: str) -> None:
    """Refuse (409) regions for a model whose style cannot paint them."""
    if not max_regions(painter):
        raise ApiError(
            409,
            f"{where}: this model's style reaches only its first layer, so a region cannot "
            "have a style of its own (train with train.arch.z_every_layer: true)",
        )


def code(painter: Painter, values: Sequence[float], where: str) -> torch.Tensor:
    """A (1, z_dim) style code sent as a list of numbers."""
    z_dim = painter.model.arch.z_dim
    if len(values) != z_dim:
        raise ApiError(422, f"{where}: this model's z has {z_dim} numbers")
    return torch.tensor([list(values)], dtype=torch.float32)


def base_z(painter: Painter, values: Sequence[float] | None) -> torch.Tensor | None:
    """The base style of a face: the given z, or None for the seed's own."""
    return None if values is None else code(painter, values, "z")


def blob(rough: np.ndarray, point: Point, where: str) -> np.ndarray:
    """The (S, S) bool mask of the blob under `point` in `rough`."""
    try:
        return region_at(rough, point.x, point.y)
    except UserError as e:
        raise ApiError(422, f"{where}: {e}") from None


def region_styles(
    painter: Painter, rough: np.ndarray, regions: Sequence[Region]
) -> list[RegionStyle]:
    """Each region's blob in `rough` and its code (its seed's z, or its own z)."""
    if regions:
        require_regions(painter, "regions")
    styles = []
    for i, region in enumerate(regions):
        where = f"regions.{i}"
        mask = blob(rough, region, where)
        if region.seed is not None:
            z = painter.z_for_seed(region.seed)
        else:
            assert region.z is not None  # `Region` holds exactly one of the two
            z = code(painter, region.z, f"{where}.z")
        styles.append(RegionStyle(mask, z))
    return styles


def strip_region(
    painter: Painter, rough: np.ndarray, point: Point, regions: Sequence[RegionStyle]
) -> np.ndarray:
    """The mask of the blob a region strip varies, once it is known to leave it a code."""
    require_regions(painter, "region")
    mask = blob(rough, point, "region")
    others = sum(not np.array_equal(r.mask, mask) for r in regions)
    if others + 1 > MAX_CODES - 1:
        raise ApiError(
            422,
            f"region: a face holds {MAX_CODES - 1} restyled regions; reset one of the others "
            "to make a strip for this one",
        )
    return mask
