"""Regions of a rough, and the masks that give each region a style code of its own.

A region is one flat-colour blob of the rough: a 4-connected component of pixels of exactly one
colour. The rough recipe (mean shift, then a median) leaves a face as a few dozen such blobs (the
hair, the skin, the backdrop, each eye…), so a point on the canvas names a part of the face, and
a colour names every blob of that colour.

Masks follow `spade.networks.SpadeGenerator`: (B, K, S, S) floats, one per style code, that sum
to 1 at every pixel; code 0 is the base style, painted wherever no region claims the pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from spade.errors import UserError
from spade.networks import RandomStream

MAX_CODES = 8  # style codes in one face: the base and up to 7 restyled regions
MIX_SLOTS = 256  # training draws one coin per slot; region k takes slot k mod MIX_SLOTS


def _packed(rough: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 → (S, S) int32 colour codes 0xRRGGBB."""
    rgb = rough.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def components(rough: np.ndarray) -> np.ndarray:
    """(S, S) int32 region labels 0…n−1 of an (S, S, 3) uint8 rough: one label per 4-connected
    blob of one colour, numbered by colour (increasing 0xRRGGBB) and, within a colour, by the
    raster position of each blob's first pixel, so the same rough always gets the same labels.

    One OpenCV labelling for all colours (training labels a batch's roughs every step): the
    pixels on a (2S − 1)² grid, linked to their right and lower neighbours where those have the
    same colour."""
    packed = _packed(rough)
    size = packed.shape[0]
    grid = np.zeros((2 * size - 1, 2 * size - 1), np.uint8)
    grid[::2, ::2] = 1
    grid[::2, 1::2] = packed[:, 1:] == packed[:, :-1]
    grid[1::2, ::2] = packed[1:] == packed[:-1]
    _, blobs = cv2.connectedComponents(grid, connectivity=4, ltype=cv2.CV_32S)
    flat = blobs[::2, ::2].ravel()
    found, first = np.unique(flat, return_index=True)  # each blob's first pixel
    order = np.lexsort((first, packed.ravel()[first]))  # by colour, then first pixel
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank[np.searchsorted(found, flat)].reshape(packed.shape)


def region_at(rough: np.ndarray, x: int, y: int) -> np.ndarray:
    """The (S, S) bool mask of the blob under pixel (x, y)."""
    size = rough.shape[0]
    if not (0 <= x < rough.shape[1] and 0 <= y < size):
        raise UserError(f"point {x},{y} is outside the {rough.shape[1]}×{size} canvas")
    packed = _packed(rough)
    mask = (packed == packed[y, x]).astype(np.uint8)
    _, blobs = cv2.connectedComponents(mask, connectivity=4)
    return blobs == blobs[y, x]


def region_of_color(rough: np.ndarray, color: Sequence[int]) -> np.ndarray:
    """The (S, S) bool mask of every pixel of exactly `color` (R, G, B)."""
    r, g, b = (int(c) for c in color)
    mask = _packed(rough) == ((r << 16) | (g << 8) | b)
    if not mask.any():
        raise UserError(f"the rough has no pixel of colour #{r:02x}{g:02x}{b:02x}")
    return mask


def code_masks(regions: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(1, 1 + len(regions), S, S) masks: region k paints with code k + 1 (a later region wins
    where two overlap) and code 0 everywhere else."""
    if len(regions) + 1 > MAX_CODES:
        raise UserError(f"at most {MAX_CODES - 1} restyled regions in one face")
    owner = np.zeros((size, size), np.int64)
    for k, region in enumerate(regions, start=1):
        owner[region] = k
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(owner), len(regions) + 1)
    return one_hot.permute(2, 0, 1)[None].float()


def random_region_masks(rough: torch.Tensor, mix: float, rng: RandomStream) -> torch.Tensor:
    """Regional style mixing for training: (B, 1, S, S) masks where a second style code paints.

    Each face of the (B, 3, S, S) rough batch (in [−1, 1]) is mixed with probability `mix`; a
    mixed face's mask is a random half of its regions (each region by a coin), so the generator
    learns to paint blobs in another style beside its own, with no seam at their edges. The coins
    come from `rng`, a fixed number per face, so the draws do not depend on the data.
    """
    batch = len(rough)
    mixed = (rng.rand(batch, device=torch.device("cpu")) < mix).numpy()
    coins = (rng.rand(batch, MIX_SLOTS, device=torch.device("cpu")) < 0.5).numpy()
    images = ((rough.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    images = images.permute(0, 2, 3, 1).numpy()
    masks = np.zeros((batch, 1, *rough.shape[-2:]), np.float32)
    for i in np.flatnonzero(mixed):
        labels = components(images[i])
        masks[i, 0] = coins[i][labels % MIX_SLOTS]
    return torch.from_numpy(masks).to(rough.device)
