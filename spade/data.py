"""Paired (rough, image) data read from the packed .npy arrays of the data stages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from spade.errors import UserError
from spade.images import load_image_array


class PairDataset(Dataset):
    """Item i is (rough, image) as uint8 CHW tensors; scaling happens on the device.

    The arrays are memory-mapped lazily in each worker, so DataLoader workers share the page
    cache instead of pickling the whole dataset.
    """

    def __init__(self, roughs_path: Path | str, images_path: Path | str):
        self.paths = (Path(roughs_path), Path(images_path))
        roughs, images = (load_image_array(p) for p in self.paths)
        if roughs.shape != images.shape:
            raise UserError(
                f"{self.paths[0]} {roughs.shape} and {self.paths[1]} {images.shape} differ: "
                "re-run `dvc repro roughen`"
            )
        self.shape = images.shape
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def image_size(self) -> int:
        return self.shape[1]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = tuple(load_image_array(p) for p in self.paths)
        return self._arrays

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        roughs, images = self.arrays()
        return _chw(roughs[i]), _chw(images[i])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # copy: memmaps are read-only


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """float [-1, 1] (B, 3, H, W) → uint8 (B, H, W, 3) on the CPU."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def isolated_rng(device: torch.device):
    """Run side work (grids, BN re-estimation, evaluation) without moving the training RNG."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class ResumableSampler(Sampler[int]):
    """DistributedSampler that can start part-way into an epoch (to resume mid-epoch)."""

    def __init__(self, dataset: Dataset, *, rank: int, world_size: int, seed: int):
        self.inner = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.start :])

    def __len__(self) -> int:
        return len(self.inner) - self.start
