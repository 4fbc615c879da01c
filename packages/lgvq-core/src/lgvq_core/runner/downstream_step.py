"""The default training step of a downstream run: the model's ``training_loss`` on cached codes.

The downstream run kind's default ``lgvq_train_step`` (:mod:`lgvq_core.runner.kinds`). Accumulation,
autocast, the fp16 scaler, gradient clipping and the NaN check are the same as a tokenizer run's.
"""

from __future__ import annotations

import torch

from lgvq_core.runner.downstream import model_inputs
from lgvq_core.runner.optim import apply_lr_schedule
from lgvq_core.runner.step import check_finite, no_sync, step_optimizer


def run_downstream_step(run, micro_batches: list[dict]) -> dict[str, float]:
    """One optimizer step over ``train.accumulate`` micro-batches; returns averaged loss terms."""
    optimizer = run.optimizers.model
    apply_lr_schedule(run)
    optimizer.zero_grad(set_to_none=True)
    count = len(micro_batches)
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        with no_sync(run.model_module, skip_sync=i < count - 1):
            with run.autocast():
                terms = dict(run.model_module(model_inputs(run, batch)))
            check_finite(terms, run.step + 1)
            run.scalers.model.scale(terms["loss"] / count).backward()
        for name, value in terms.items():
            value = value.detach().float()
            sums[name] = sums[name] + value if name in sums else value
    step_optimizer(optimizer, run.scalers.model, run.model_parameters, run.config.train.grad_clip)
    names = list(sums)
    values = (torch.stack([sums[n] for n in names]) / count).tolist()
    return dict(zip(names, values, strict=True))
