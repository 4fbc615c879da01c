"""The collectives of codebook updates: under ``torch.distributed`` every rank keeps the same codebook.

Updates that do not come from a gradient (EMA statistics, k-means, restarts) are not synchronised by
DistributedDataParallel, so they either reduce their statistics over ranks or take rank 0's draws.
Outside a process group of more than one rank these are no-ops.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    """Whether a process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if distributed() else 1


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, in place (one all-reduce); returns it."""
    if distributed():
        dist.all_reduce(tensor)
    return tensor


def from_rank_zero(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` replaced by rank 0's, in place (one broadcast); returns it."""
    if distributed():
        dist.broadcast(tensor, src=0)
    return tensor
