"""Which torch device to run on."""

from __future__ import annotations

import torch

from spade.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when present), 'cpu' or 'cuda'; a clear error when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device 'cuda' was asked for but CUDA is not available; use 'auto' or 'cpu'"
        )
    return torch.device(name)
