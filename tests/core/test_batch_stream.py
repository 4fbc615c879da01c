"""The training stream over unreadable items: skipped and reported, never an endless loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lgvq_core.errors import DataError
from lgvq_core.runner.batches import BatchStream


class Unreadable(torch.utils.data.Dataset):
    """``readable`` items of ``size`` can be read; the others are skip markers. Counts the reads."""

    def __init__(self, size: int, readable: set[int], on_read=None) -> None:
        self.size, self.readable, self.on_read, self.reads = size, readable, on_read, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        index, _ = key
        self.reads += 1
        if self.on_read is not None:
            self.on_read(self.reads)
        if index in self.readable:
            return {"index": index, "image": torch.zeros(3, 2, 2), "caption": "x", "captions": ["x"]}
        return {"index": index, "error": f"item {index} is broken"}


def stream_over(data: Unreadable, world_size: int = 1) -> tuple[BatchStream, SimpleNamespace]:
    run = SimpleNamespace(
        config=SimpleNamespace(train=SimpleNamespace(batch_size=2, num_workers=0), run=SimpleNamespace(seed=0)),
        train_data=data,
        rank=0,
        world_size=world_size,
        device=torch.device("cpu"),
        batches_seen=0,
        skipped_items=[],
        stop_reason=None,
    )
    return BatchStream(run), run


def test_skipped_batches_are_passed_over_and_reported():
    stream, run = stream_over(Unreadable(8, readable={5}))
    batch = stream.next()
    assert batch["index"] and all(index == 5 for index in batch["index"])
    assert {index for index, _ in run.skipped_items} <= set(range(8)) - {5}


def test_an_epoch_without_a_readable_item_is_an_error_naming_what_to_do():
    data = Unreadable(8, readable=set())
    stream, _ = stream_over(data)
    with pytest.raises(
        DataError, match="in 4 batches in a row .*8 unreadable item\\(s\\) of 8.*skip_bad_items = false"
    ):
        stream.next()
    assert data.reads == 8  # one epoch, then the error


def test_a_stop_requested_while_skipping_ends_the_wait():
    def request_stop(reads: int) -> None:
        if reads == 3:
            run.stop_reason = "signal"

    data = Unreadable(1000, readable=set(), on_read=request_stop)
    stream, run = stream_over(data)
    assert stream.next() is None  # the loop then saves checkpoints/last and stops
    assert data.reads == 4  # the batch being read when the signal came, then no more


def test_under_ddp_the_stream_goes_on_to_the_step_where_the_ranks_agree_to_stop():
    def request_stop(reads: int) -> None:
        if reads == 1:
            run.stop_reason = "signal"

    data = Unreadable(8, readable=set(), on_read=request_stop)
    stream, run = stream_over(data, world_size=2)
    order = [index for index, _ in stream.sampler]  # rank 0's four items: two batches
    data.readable = set(order[2:])  # its first batch unreadable, its second readable
    batch = stream.next()  # rank 0 of 2 does not stop alone while skipping
    assert batch is not None and sorted(batch["index"]) == sorted(order[2:])
