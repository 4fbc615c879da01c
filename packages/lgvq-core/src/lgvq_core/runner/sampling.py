"""Data order as a pure function of (seed, epoch, position): exact resume, any worker count.

Training keys are ``(index, item_seed)``; the dataset draws the caption, crop and flip of an item
from ``item_seed``. The order comes from :class:`torch.utils.data.DistributedSampler`, whose
rank-interleaving makes the union of the ranks' step-t batches equal the step-t batch of a
single process with the same global batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item in one epoch (independent of rank and batch position)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TrainKeySampler(DistributedSampler):
    """Shuffled, rank-sharded ``(index, item_seed)`` keys that can start mid-epoch."""

    def __init__(self, dataset: Dataset, seed: int, rank: int, world_size: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        """Start at ``epoch``, leaving out the first ``skip`` keys of this rank (a resume)."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.skip :]
        for index in indices:
            yield (int(index), item_seed(self.seed, self.epoch, int(index)))

    def __len__(self) -> int:
        return super().__len__() - self.skip


class ShardSampler(Sampler[int]):
    """Validation: every item once across ranks (rank r takes r, r + W, ...), in order, no padding."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
