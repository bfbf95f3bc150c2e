"""Style diversity: how much the faces for one rough differ when only z changes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from spade.errors import UserError


def mean_pairwise_l1(variants: Sequence[np.ndarray]) -> float:
    """Mean L1 on [0, 1] between every pair of K same-shape uint8 image sets, averaged over the
    pairs and the images: 0 when z is ignored; compare with the L1 of a face to its real one."""
    if len(variants) < 2:
        raise UserError(f"diversity needs at least 2 variants, got {len(variants)}")
    total = 0.0
    pairs = list(itertools.combinations(range(len(variants)), 2))
    for i, j in pairs:
        a, b = (np.asarray(variants[k], dtype=np.int16) for k in (i, j))
        total += float(np.abs(a - b).mean()) / 255.0
    return total / len(pairs)
