"""The training stream and the validation loader.

Data order, crops, flips and caption choice are a function of (seed, epoch, index) (see
:class:`~lgvq_core.runner.sampling.TrainKeySampler`), and every loader has its own generator, so
no loader draws from the global RNG that the model's random draws use: resuming is exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from lgvq_core.data.base import collate
from lgvq_core.errors import DataError
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.sampling import ShardSampler, TrainKeySampler


def check_one_batch(run: RunContext) -> None:
    """Fail (before a run directory exists) when the training split cannot fill one global batch."""
    batch_size = run.config.train.batch_size
    if len(run.train_data) // run.world_size < batch_size:
        raise DataError(
            f"the training split has {len(run.train_data)} items, fewer than one global batch "
            f"({batch_size} x {run.world_size} processes); lower train.batch_size"
        )


def train_loader(run: RunContext) -> tuple[DataLoader, TrainKeySampler]:
    check_one_batch(run)
    train = run.config.train
    sampler = TrainKeySampler(run.train_data, run.config.run.seed, run.rank, run.world_size)
    loader = DataLoader(
        run.train_data,
        batch_size=train.batch_size,
        sampler=sampler,
        num_workers=train.num_workers,
        collate_fn=getattr(run.train_data, "collate", collate),
        drop_last=True,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(run.config.run.seed),
    )
    return loader, sampler


def val_loader(run: RunContext) -> DataLoader:
    return DataLoader(
        run.val_data,
        batch_size=run.config.train.batch_size,
        sampler=ShardSampler(len(run.val_data), run.rank, run.world_size),
        num_workers=run.config.train.num_workers,
        collate_fn=getattr(run.val_data, "collate", collate),
        generator=torch.Generator().manual_seed(run.config.run.seed),
    )


class BatchStream:
    """Endless micro-batches in (epoch, position) order, resumable from ``run.batches_seen``."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.loader, self.sampler = train_loader(run)
        self.per_epoch = len(self.sampler) // run.config.train.batch_size
        self.iterator = None

    def _start(self) -> None:
        epoch, offset = divmod(self.run.batches_seen, self.per_epoch)
        self.sampler.set_position(epoch, offset * self.run.config.train.batch_size)
        self.iterator = iter(self.loader)

    def next(self) -> dict[str, Any] | None:
        """The next batch with at least one readable item; None when a stop was requested meanwhile
        (one process; under DDP every rank goes on to the step, where the ranks agree to stop).

        Raises :class:`~lgvq_core.errors.DataError` when a whole epoch of batches in a row held no
        readable item (every item unreadable): skipping would go on forever.
        """
        empty = 0
        while True:
            if self.iterator is None:
                self._start()
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.iterator = None
                continue
            self.run.batches_seen += 1
            if self.run.batches_seen % self.per_epoch == 0:
                self.iterator = None  # the epoch is complete; the next one reshuffles
            self.run.skipped_items.extend(batch.get("skipped", []))
            if batch["index"]:
                return to_device(batch, self.run.device)
            # every item of the batch was skipped (and reported)
            empty += 1
            if empty >= self.per_epoch:
                unreadable = len({item for item, _ in self.run.skipped_items})
                raise DataError(
                    f"no item of the training split could be read in {empty} batches in a row (a whole epoch; "
                    f"{unreadable} unreadable item(s) of {len(self.run.train_data)}): check [data] (its root, files "
                    "and annotations), or set train.skip_bad_items = false to stop at the first unreadable item "
                    "with its error"
                )
            if self.run.stop_reason is not None and self.run.world_size == 1:
                return None  # a signal arrived while skipping: the loop stops and saves


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor moved to ``device``."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def probe_batch(run: RunContext, count: int) -> torch.Tensor | dict[str, Any] | None:
    """The first ``count`` validation items (rank 0): a tokenizer run's images (sample grids, and
    the probe of its final checkpoint), or a downstream run's collated items (codes, its probe)."""
    if not run.is_main or len(run.val_data) == 0:
        return None
    items = [run.val_data[i] for i in range(min(count, len(run.val_data)))]
    batch = getattr(run.val_data, "collate", collate)(items)
    return run.run_kind.probe_items(batch)
