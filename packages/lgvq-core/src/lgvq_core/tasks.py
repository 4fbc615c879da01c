"""The task contract: evaluation and downstream tasks run on a trained tokenizer.

A task spec's factory returns an object with ``name`` and
``run(model: TrainedModel, data: CaptionedImages, out_dir: pathlib.Path) -> dict``; the dict of
metrics (numbers, or nested dicts of numbers) is written to ``eval/<task>.json`` and shown in a table.
An optional ``"better": {"key.path": "higher" | "lower"}`` entry tells ``lgvq compare`` which way
each number is better (see :mod:`lgvq_core.runner.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainedModel:
    """A trained tokenizer and what came with it, as loaded from a run directory.

    ``tokenizer`` (eval mode), ``alignment`` (the alignment module with the code ViT and the
    losses' heads, or ``None`` for a baseline run), ``text_encoder`` and ``text_cache`` (or
    ``None``), ``device``, ``config`` (the validated :class:`lgvq_core.config.RunFile`),
    ``run_dir`` and ``step`` (training step of the checkpoint).
    """

    tokenizer: Any
    alignment: Any
    text_encoder: Any
    text_cache: Any
    device: Any
    config: Any
    run_dir: Path | None = None
    step: int = 0
    batch_size: int = 32
    extra: dict[str, Any] = field(default_factory=dict)
    #: A downstream run (its :class:`~lgvq_core.runner.context.RunContext`, model in eval mode) when
    #: the evaluated run trained a model on frozen codes; ``tokenizer`` is then its frozen tokenizer.
    downstream_run: Any = None
