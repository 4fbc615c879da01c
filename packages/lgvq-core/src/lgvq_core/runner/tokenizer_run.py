"""A tokenizer run's kind: what the loop asks of a run that trains a tokenizer (and its alignment
heads and discriminator). Its builder is :func:`lgvq_core.runner.components.build_run`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lgvq_core.runner import optim, validation
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.kinds import RunKind
from lgvq_core.runner.load import write_build_record
from lgvq_core.runner.step import run_train_step


class TokenizerKind(RunKind):
    name = "tokenizer"

    def saved_modules(self, run: RunContext) -> dict[str, nn.Module | None]:
        """The tokenizer, the alignment heads, the discriminator; never the text encoder."""
        return {"tokenizer": run.model, "alignment": run.alignment, "discriminator": run.discriminator}

    def train_step(self, run: RunContext, batch: list[Any]) -> dict[str, float]:
        return run_train_step(run, batch)

    def make_optimizers(self, run: RunContext) -> optim.Optimizers:
        return optim.tokenizer_optimizers(run)

    def validate(self, run: RunContext, loader: Any) -> dict[str, float]:
        return validation.validate(run, loader)

    def probe_items(self, batch: dict[str, Any]) -> torch.Tensor:
        """The images: sample grids show them over their reconstructions."""
        return batch["image"]

    def probe_terms(self, run: RunContext, probe: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator loss on the probe images."""
        images = probe.to(run.device)
        return dict(run.model.generator_loss(images, run.model(images), run.step, None))

    def draws_samples(self, run: RunContext, probe: Any) -> bool:
        return probe is not None

    def save_samples(self, run: RunContext, probe: torch.Tensor) -> None:
        validation.save_reconstruction_samples(run, probe)

    def uses_text(self, run: RunContext) -> bool:
        """Only with alignment losses; without them, tasks encode what they read on demand."""
        return run.alignment is not None

    def trained_model(self, run: RunContext) -> Any:
        """The tokenizer and its alignment heads (``None`` for a baseline run)."""
        return self.task_view(run, run.model, run.alignment.eval() if run.alignment is not None else None, None)

    def started(self, run: RunContext) -> None:
        """``tokenizer-build.json``: what rebuilding the tokenizer alone needs (:mod:`lgvq_core.runner.load`)."""
        write_build_record(
            run.run_dir, getattr(run.train_data, "image_size", None), int(getattr(run.train_data, "in_channels", 3))
        )


#: The kind of every tokenizer run.
TOKENIZER = TokenizerKind()
