"""Learning split over processes (`torchrun` / `accelerate launch`): which rank this is, joining the process group,
and completing per-rank partial tensors. One process is rank 0 of 1 and every call here is a no-op."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor


def shard() -> tuple[int, int]:
    """(rank, world size) of an initialised `torch.distributed` process group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def merge_shards(tensors: Sequence[Tensor]) -> None:
    """Sum zero-initialised [N, D] tensors in place over ranks: each rank filled only its own rows, so the sum is
    every row, exactly as one process would have it."""
    if shard()[1] > 1:
        for tensor in tensors:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)


def join_process_group(device: str | None) -> tuple[int, str | None]:
    """Under a launcher (WORLD_SIZE > 1): join the process group (nccl on GPUs, gloo on CPU) so that response
    collection is split over the ranks; returns this rank and its device (`device` unchanged in one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, device
    cuda = torch.cuda.is_available() and (device or "cuda").startswith("cuda")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.distributed.get_rank(), f"cuda:{local}" if cuda else "cpu"
