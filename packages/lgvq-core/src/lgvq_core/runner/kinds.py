"""Two kinds of run, one loop: what differs between a tokenizer run and a downstream run.

The loop, checkpoints, resume, signals, the NaN guard, DDP, precision, validation bookkeeping and
callbacks are the same for both; where the kinds differ they ask the run's :class:`RunKind`
(``run.run_kind``) and never compare kind names. Each kind has its builder, which sets the kind
when it makes the :class:`~lgvq_core.runner.context.RunContext`:

- a tokenizer run: :data:`lgvq_core.runner.tokenizer_run.TOKENIZER`, built by
  :func:`lgvq_core.runner.components.build_run`;
- a downstream run: :data:`lgvq_core.runner.downstream_run.DOWNSTREAM`, built by
  :func:`lgvq_core.runner.downstream_run.build_downstream_run`.

:func:`lgvq_core.runner.components.build_run` is the one place that picks a builder (from the run
file's class). The default ``lgvq_train_step`` and ``lgvq_make_optimizers`` below are the run
kind's, tried after every plugin's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lgvq_core.plugins import hookimpl
from lgvq_core.tasks import TrainedModel

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from lgvq_core.runner.context import RunContext
    from lgvq_core.runner.optim import Optimizers


class RunKind:
    """The parts of a run that depend on what it trains. Subclasses answer every method."""

    #: ``"tokenizer"`` or ``"downstream"``: ``run.kind``, ``resolved.toml``'s reader, the docs.
    name: str = ""

    def saved_modules(self, run: RunContext) -> dict[str, nn.Module | None]:
        """What a checkpoint holds, by weight prefix."""
        raise NotImplementedError

    def train_step(self, run: RunContext, batch: list[Any]) -> dict[str, float]:
        """The default optimizer step over ``train.accumulate`` micro-batches; averaged loss terms."""
        raise NotImplementedError

    def make_optimizers(self, run: RunContext) -> Optimizers:
        """The default optimizers."""
        raise NotImplementedError

    def validate(self, run: RunContext, loader: Any) -> dict[str, float]:
        """Validation metrics on ``loader`` (every rank; the numbers of the whole split)."""
        raise NotImplementedError

    def probe_items(self, batch: dict[str, Any]) -> Any:
        """What the fixed probe keeps of a collated validation batch (sample grids, the NaN guard)."""
        raise NotImplementedError

    def probe_terms(self, run: RunContext, probe: Any) -> dict[str, torch.Tensor]:
        """The loss terms of the current weights on the probe (called in eval mode, under autocast)."""
        raise NotImplementedError

    def draws_samples(self, run: RunContext, probe: Any) -> bool:
        """Whether :meth:`save_samples` has something to draw."""
        raise NotImplementedError

    def save_samples(self, run: RunContext, probe: Any) -> None:
        """``samples/step-NNNNNNN.png`` (rank 0)."""
        raise NotImplementedError

    def uses_text(self, run: RunContext) -> bool:
        """Whether training reads caption features (then every training caption is encoded up front)."""
        raise NotImplementedError

    def trained_model(self, run: RunContext) -> TrainedModel:
        """What a task sees of the finished run (its model already in eval mode)."""
        raise NotImplementedError

    @staticmethod
    def task_view(run: RunContext, tokenizer: Any, alignment: Any, downstream_run: Any) -> TrainedModel:
        """A :class:`~lgvq_core.tasks.TrainedModel` of ``run`` with the kind's own three parts."""
        return TrainedModel(
            tokenizer=tokenizer,
            alignment=alignment,
            text_encoder=run.text_encoder,
            text_cache=run.text_cache,
            device=run.device,
            config=run.config,
            run_dir=run.run_dir,
            step=run.step,
            batch_size=run.config.train.batch_size,
            train_data=run.train_data,
            downstream_run=downstream_run,
        )

    def started(self, run: RunContext) -> None:
        """Once the run directory exists (rank 0): what the kind records there."""

    def __repr__(self) -> str:
        return f"<run kind {self.name}>"


@hookimpl(trylast=True)
def lgvq_train_step(run, batch):
    """Default: the run kind's step (a tokenizer run: :func:`lgvq_core.runner.step.run_train_step`;
    a downstream run: :func:`lgvq_core.runner.downstream_step.run_downstream_step`)."""
    return run.run_kind.train_step(run, batch)


@hookimpl(trylast=True)
def lgvq_make_optimizers(run):
    """Default: the run kind's optimizers (a tokenizer run: Adam over tokenizer + alignment
    parameters and Adam over the discriminator; a downstream run: AdamW over the model's own
    parameter groups, ``param_groups(weight_decay)``)."""
    return run.run_kind.make_optimizers(run)
