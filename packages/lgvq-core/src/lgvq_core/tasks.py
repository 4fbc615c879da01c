"""The task contract: evaluation and downstream tasks run on a trained tokenizer.

A task spec's factory returns an object with ``name`` and
``run(model: TrainedModel, data: CaptionedImages, out_dir: pathlib.Path) -> dict``; the dict of
metrics (numbers, or nested dicts of numbers) is written to ``eval/<task>.json`` and shown in a table.
An optional ``"better": {"key.path": "higher" | "lower"}`` entry tells ``lgvq compare`` which way
each number is better (see :mod:`lgvq_core.runner.compare`).

Under ``torchrun``, ``lgvq eval`` shards the split of a task whose class sets ``shards_split = True``:
each rank walks ``model.shard``'s slice and the task's torchmetrics metrics sync on ``compute``, so
every rank gets the numbers of the whole split. Other tasks run on rank 0 alone.

A task may also have ``requires(model: TrainedModel) -> str | None``: why it cannot run on this
model (``None`` when it can). Evaluation asks every task before any of them works, runs the
others, and reports the refused one in the table with its reason. A task config's
``cross_check`` can say the same at ``lgvq check`` time, from the run file alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lgvq_core.contracts import ContractError

if TYPE_CHECKING:  # pragma: no cover - types only: this module imports no torch
    import torch
    from torch import nn

    from lgvq_core.config.schema import DownstreamRunFile, RunFile
    from lgvq_core.data.base import CaptionedImages
    from lgvq_core.runner.context import DownstreamRunContext
    from lgvq_core.text_encoder import TextEncoder
    from lgvq_core.text_feature_cache import TextFeatureCache
    from lgvq_core.tokenizer import Tokenizer


@dataclass(frozen=True)
class EvalShard:
    """The part of an evaluation split one process walks: contiguous slice ``rank`` of ``count``.

    Contiguous (not strided) so that rank 0 holds the split's first items, the ones a task shows
    in its pictures, and the pictures match a single-process evaluation.
    """

    rank: int = 0
    count: int = 1

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def indices(self, total: int) -> range:
        """This rank's item indices among ``range(total)``; sizes differ by at most one."""
        per_rank, extra = divmod(total, self.count)
        start = self.rank * per_rank + min(self.rank, extra)
        return range(start, start + per_rank + (1 if self.rank < extra else 0))


@dataclass
class TrainedModel:
    """A trained run as a task sees it, loaded from its run directory, in eval mode.

    ``tokenizer``: the trained tokenizer (of a downstream run: its frozen tokenizer); ``alignment``:
    the alignment module with the code ViT and the losses' heads (``None`` for a baseline run and
    for a downstream run); ``text_encoder`` and ``text_cache`` (or ``None``); ``device``; ``config``:
    the validated run file; ``run_dir`` and ``step`` (training step of the checkpoint).
    """

    tokenizer: Tokenizer
    alignment: nn.Module | None
    text_encoder: TextEncoder | None
    text_cache: TextFeatureCache | None
    device: torch.device
    config: RunFile | DownstreamRunFile
    run_dir: Path | None = None
    step: int = 0
    batch_size: int = 32
    #: The run's training split, when a task needs it (the one the run or evaluation built, else
    #: built on first use from the run file).
    train_data: CaptionedImages | None = None
    #: What tasks compute once per model and share within one evaluation (a probe trained on its
    #: codes, say), under a key of the task's choosing.
    memo: dict[str, Any] = field(default_factory=dict)
    #: A downstream run (model in eval mode) when the evaluated run trained a model on frozen codes.
    downstream_run: DownstreamRunContext | None = None
    #: The slice of the split this process evaluates (all of it outside ``torchrun``).
    shard: EvalShard = field(default_factory=EvalShard)


def refusal(task: Any, model: TrainedModel) -> str | None:
    """Why ``task`` cannot run on ``model`` (its optional ``requires``), or ``None``."""
    requires = getattr(task, "requires", None)
    return requires(model) if requires is not None else None


def one_code_per_position(model: TrainedModel, task: str) -> str | None:
    """The refusal of a task that reads one code per latent position, when the quantizer picks several."""
    quantizer = model.tokenizer.quantizer
    codes = int(getattr(quantizer, "codes_per_position", 1))
    if codes > 1:
        return (
            f"{task} needs one code per latent position; this run's quantizer ({type(quantizer).__name__}) "
            f"picks {codes} per position"
        )
    return None


def check_task(task: Any) -> None:
    """The task contract: an object with ``run(model, data, out_dir)``."""
    if not callable(getattr(task, "run", None)):
        raise ContractError(f"a task must have run(model, data, out_dir); {task!r} has none")
