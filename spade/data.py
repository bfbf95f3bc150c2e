"""Paired (rough, image) data from the data stages' packed arrays, and the one conversion between
uint8 images and model tensors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from spade.errors import UserError
from spade.images import load_image_array


def to_model(
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """uint8 (B, H, W, 3) images → float (B, 3, H, W) in [-1, 1] on `device`.

    By default the result keeps the layout of the pixels (channels_last: no copy); training
    asks for the layout it runs in.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images))  # a copy: memory-mapped arrays are read-only
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x if memory_format is None else x.contiguous(memory_format=memory_format)


def to_images(x: torch.Tensor) -> np.ndarray:
    """float [-1, 1] (B, 3, H, W) → uint8 (B, H, W, 3) on the CPU."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class PairDataset(Dataset):
    """Item i is (rough, image) as uint8 (H, W, 3) tensors; scaling happens on the device.

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
        """(roughs, images), memory-mapped."""
        if self._arrays is None:
            self._arrays = tuple(load_image_array(p) for p in self.paths)
        return self._arrays

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        roughs, images = self.arrays()
        return torch.from_numpy(np.array(roughs[i])), torch.from_numpy(np.array(images[i]))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}


class ResumableSampler(Sampler[int]):
    """DistributedSampler that can start part-way into an epoch (to resume mid-epoch).

    Rank r takes every world_size-th index of one seeded permutation, so with a per-process batch
    of batch_size / world_size the ranks' batches of step s together are exactly the global batch
    a single process would take at step s.
    """

    def __init__(self, dataset: Dataset, *, rank: int, world_size: int, seed: int):
        self.inner = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start`: how many of this rank's indices of the epoch to skip."""
        self.inner.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.start :])

    def __len__(self) -> int:
        return len(self.inner) - self.start
