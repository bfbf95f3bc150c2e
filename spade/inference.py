"""Seeded, batched inference: faces for a set of roughs, the same for the same seed.

Used by training (sample grids, test L1), evaluation, `spade generate` and the studio. The
randomness (z and the per-layer noise) comes from a `torch.Generator` of its own, never from the
global RNG, so it neither disturbs nor depends on training or concurrent requests.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from spade.data import to_images, to_model
from spade.networks import FaceModel, RandomStream


def seeded(seed: int) -> RandomStream:
    """A stream of its own, drawn on the CPU: the same numbers on every device."""
    return RandomStream(torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate_faces(
    model: FaceModel,
    roughs: np.ndarray,
    *,
    seed: int,
    batch_size: int = 32,
    out: np.ndarray | None = None,
    progress: bool = False,
    styles: np.ndarray | None = None,
    region: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """G(rough) for uint8 (N, S, S, 3) roughs, batched; z and noise from one seeded stream.

    With `styles` (N reference faces, needs the style encoder) z is the encoder's mean of
    styles[i] instead of a random draw; the noise still comes from `seed`. With `region`, (N
    reference faces, N (S, S) bool masks), face i is painted in region[0][i]'s style inside
    region[1][i] and in styles[i]'s everywhere else.
    """
    device = next(model.parameters()).device
    out = np.empty_like(roughs) if out is None else out
    rng = seeded(seed)
    starts = range(0, len(roughs), batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        batch = slice(start, start + batch_size)
        cond = to_model(roughs[batch], device)
        z = None if styles is None else model.encoder(to_model(styles[batch], device))[0]
        masks = None
        if region is not None:
            z_region = model.encoder(to_model(region[0][batch], device))[0]
            inside = torch.from_numpy(np.asarray(region[1][batch], np.float32))[:, None]
            z, masks = torch.stack([z, z_region], dim=1), torch.cat([1 - inside, inside], 1)
        fake, _, _ = model(cond, z=z, rng=rng, masks=None if masks is None else masks.to(device))
        out[start : start + len(cond)] = to_images(fake)
    return out


def paired_faces(
    model: FaceModel,
    roughs: np.ndarray,
    real: np.ndarray,
    *,
    seed: int,
    batch_size: int = 32,
) -> np.ndarray:
    """The faces paired metrics compare with the real ones: each rough painted in the style of
    its own real face (the style encoder's code of it), as a model with an encoder is meant to
    be compared with ground truth; a model without one paints from `seed`. A random style would
    count every style it did not guess as an error of colours and shapes."""
    styles = real if model.encoder is not None else None
    return generate_faces(model, roughs, seed=seed, batch_size=batch_size, styles=styles)
