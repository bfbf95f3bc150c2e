"""The one place that knows about multiple processes (torchrun / DDP).

Rank 0 alone logs, writes checkpoints, models and metrics; every other module asks `env.is_main`.
CUDA runs use NCCL, CPU runs use gloo (so the tests can run two processes without a GPU).
`train.batch_size` is the global batch: each process takes `batch_size / world_size` of it, and
every process draws the random numbers of the whole batch (`stream`), so the steps, schedule and
samples are those of a one-process run.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from spade.config import LoopConfig
from spade.errors import UserError
from spade.networks import RandomStream


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def stream(self) -> RandomStream:
        """The global RNG, sharded: this process's slice of the global batch's numbers."""
        return RandomStream(shard=self.rank, num_shards=self.world_size)


RDZV_ENDPOINT = "SPADE_RDZV_ENDPOINT"  # host:port where the machines of a run meet


def relaunch_under_torchrun(script: str, cfg: LoopConfig) -> None:
    """With several processes and not yet under torchrun: replace this process with torchrun
    running `script`: `--standalone` on one machine; on `nnodes` machines a c10d rendezvous at
    $SPADE_RDZV_ENDPOINT, which every machine runs the stage with. exec, not a child process, so
    Ctrl-C and SIGTERM reach torchrun (and through it every rank)."""
    if cfg.world_size == 1 or "LOCAL_RANK" in os.environ:
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else os.cpu_count() or 1
    if cfg.nproc > available:
        kind = "GPUs" if torch.cuda.is_available() else "CPU cores"
        raise UserError(
            f"{cfg.SECTION}.nproc = {cfg.nproc} processes, but this machine has {available} "
            f"{kind}: lower {cfg.SECTION}.nproc"
        )
    args = ["-m", "torch.distributed.run", f"--nproc-per-node={cfg.nproc}"]
    if cfg.nnodes == 1:
        args.append("--standalone")
    else:
        endpoint = os.environ.get(RDZV_ENDPOINT, "")
        if not re.fullmatch(r"[\w.\-\[\]:]+:\d+", endpoint):
            raise UserError(
                f"{cfg.SECTION}.nnodes = {cfg.nnodes}: set {RDZV_ENDPOINT}=host:port (one "
                f"machine's address and a free port) on every machine, got {endpoint!r}"
            )
        args += [f"--nnodes={cfg.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}"]
        args.append(f"--rdzv-id=spade-{cfg.SECTION}")
    os.execv(sys.executable, [sys.executable, *args, script])


def init_distributed(cfg: LoopConfig | None = None) -> DistEnv:
    """Read torchrun's environment; start the process group when there is more than one rank.
    With `cfg`, the processes torchrun started must be the ones the parameters ask for."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg is not None and world_size != cfg.world_size:
        raise UserError(
            f"{world_size} processes were started, but {cfg.SECTION}.nproc × "
            f"{cfg.SECTION}.nnodes = {cfg.world_size}: the parameters must describe the run"
        )
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, device=device)


def mean_over_ranks(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average a tensor over all ranks (one all-reduce); itself in one process."""
    if not env.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / env.world_size


def max_over_ranks(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if not env.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def to_sync_batchnorm(module: nn.Module, env: DistEnv) -> nn.Module:
    """BatchNorm statistics over the global batch: SyncBatchNorm under multi-GPU CUDA.

    gloo (CPU) has no SyncBatchNorm: there each process normalises over its own share.
    """
    if env.distributed and env.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def to_plain_batchnorm(module: nn.Module) -> nn.Module:
    """Replace SyncBatchNorm by BatchNorm2d in place (same statistics, same device).

    Needed before rank 0 alone runs the model in training mode: SyncBatchNorm would wait for
    the other ranks.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            bn.to(child.running_mean.device).load_state_dict(child.state_dict())
            setattr(module, name, bn)
        else:
            to_plain_batchnorm(child)
    return module
