"""Process-group setup under ``torchrun`` and the few collectives the runner needs."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lgvq_core.errors import LgvqError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """``"cuda"`` means this process's GPU (``LOCAL_RANK``) under torchrun."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LgvqError(f'run.device = "{device}" but no CUDA device is available; use device = "cpu"')
    if device == "cuda":
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a single process."""
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    if info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (a no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """``obj`` from rank 0 on every rank."""
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Mean of each value across ranks (every rank must call this with the same keys)."""
    if not info.enabled or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= info.world_size
    return dict(zip(keys, tensor.tolist(), strict=True))


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (for coordinated stops)."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)
