"""Walking a split through the frozen model: image batches, their codes, caption features; the train split.

Items are read by plain index, so every image gets the deterministic validation transform and its
evaluation caption (the first one that passes the caption rule). Unreadable items the dataset
skips are counted and reported once at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from lgvq_core.api import BuildContext, QuantizerOutput, TextFeatures, build_component, collate
from lgvq_tasks.errors import TaskError

#: Options of every metric a task that walks the whole split in the calling process creates
#: (``lgvq eval``, or rank 0 alone at the end of ``lgvq run``): computing a metric must not wait
#: for other processes. A task that shards its split uses :func:`metric_options` instead.
LOCAL_METRIC: dict[str, Any] = {"sync_on_compute": False}


def metric_options(model: Any) -> dict[str, Any]:
    """Options of a sharded task's metrics: sync across ranks on ``compute`` exactly when the split is sharded.

    torchmetrics then sums (or concatenates) each declared state over the ranks before computing,
    so every rank gets the whole split's number.
    """
    return {"sync_on_compute": model.shard.sharded}


@dataclass
class SplitBatch:
    """One batch of the split: ``images`` b×3×H×W in [-1, 1] on the model's device."""

    images: torch.Tensor
    caption: list[str]
    captions: list[list[str]]
    index: list[int]


class Progress:
    """``<task>: <what> i/n`` every ``every`` steps and at the last one."""

    def __init__(self, task: str, total: int, every: int, what: str = "batch") -> None:
        self.task, self.total, self.every, self.what = task, total, every, what

    def step(self, done: int, detail: str = "") -> None:
        if done % self.every == 0 or done == self.total:
            suffix = f" ({detail})" if detail else ""
            print(f"{self.task}: {self.what} {done}/{self.total}{suffix}", flush=True)


def split_size(data: Any, max_images: int | None) -> int:
    return len(data) if max_images is None else min(len(data), max_images)


def batch_size_of(config: Any, model: Any) -> int:
    return int(config.batch_size or model.batch_size)


def split_batches(task: str, data: Any, model: Any, config: Any) -> Iterator[SplitBatch]:
    """Batches of the first ``config.max_images`` items (this rank's slice of them), with a progress line."""
    count = split_size(data, config.max_images)
    if count == 0:
        raise TaskError(f"{task}: the validation split is empty; nothing to evaluate")
    if count < model.shard.count:
        raise TaskError(
            f"{task}: {count} validation item(s) cannot be shared by {model.shard.count} processes; "
            "evaluate with fewer processes (or without torchrun)"
        )
    indices = model.shard.indices(count)  # all of range(count) outside torchrun
    yield from item_batches(task, data, indices, batch_size_of(config, model), model.device, config.progress_every)


def item_batches(
    task: str, data: Any, indices: Sequence[int], batch_size: int, device: Any, progress_every: int, what: str = "batch"
) -> Iterator[SplitBatch]:
    """Batches of the items ``indices`` of ``data``, in that order, with a progress line every ``progress_every``.

    The loader gets a generator of its own, so walking a split draws nothing from the global RNG
    (a task at the end of ``lgvq run`` leaves the training RNG as it found it).
    """
    loader = DataLoader(data, batch_size=batch_size, sampler=indices, collate_fn=collate, generator=torch.Generator())
    progress = Progress(task, len(loader), progress_every, what)
    skipped: list[tuple[int, str]] = []
    seen = 0
    for number, batch in enumerate(loader, start=1):
        skipped.extend(batch["skipped"])
        if batch["image"] is not None:
            seen += batch["image"].shape[0]
            yield SplitBatch(
                images=batch["image"].to(device),
                caption=list(batch["caption"]),
                captions=[list(c) for c in batch["captions"]],
                index=list(batch["index"]),
            )
        progress.step(number, f"{seen} images")
    if skipped:
        print(
            f"{task}: skipped {len(skipped)} unreadable item(s), e.g. item {skipped[0][0]}: {skipped[0][1]}", flush=True
        )


def train_split(model: Any, task: str) -> Any:
    """The run's train split: the one evaluation loaded with the model, or built from its run file (then kept in ``model.train_data``)."""
    data = model.train_data
    if data is not None:
        return data
    config = model.config
    if config is None:
        raise TaskError(f"{task} reads the run's train split, but the model carries no run file to build it from")
    context = BuildContext(
        device=str(model.device), seed=config.run.seed, split="train", log=lambda m: print(m, flush=True)
    )
    data = build_component("dataset", config.data, "$.data", context)
    model.train_data = data
    return data


@torch.no_grad()
def encode_codes(tokenizer: Any, images: torch.Tensor) -> QuantizerOutput:
    """The frozen tokenizer's codes of ``images`` (no decoding): quant b×D×h×w, indices."""
    return tokenizer.quantizer(tokenizer.encode(images))


def require_text_encoder(model: Any, task: str) -> None:
    if model.text_encoder is None:
        raise TaskError(
            f"{task} compares images with captions and needs a text encoder, but this run has no [text_encoder]. "
            "Evaluate with one, e.g. `lgvq eval RUN_DIR --set text_encoder.type=minilm`."
        )


@torch.no_grad()
def caption_features(model: Any, captions: list[str]) -> TextFeatures:
    """Frozen text features of ``captions`` on the model's device (from the run's text cache when it has one)."""
    if model.text_cache is not None:
        features = model.text_cache.get(list(captions))
    else:
        features = model.text_encoder.encode(list(captions))
    return features.to(model.device)
