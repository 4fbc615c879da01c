"""``grad-norm``: add gradient norms to the logged metrics."""

from __future__ import annotations

import torch

from lgvq_core.callbacks.config import GradNormConfig
from lgvq_core.plugins import hookimpl


def _norm(parameters, norm_type: float) -> float:
    grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads]), norm_type)
    )


class GradNorm:
    def __init__(self, config: GradNormConfig) -> None:
        self.config = config

    @hookimpl
    def lgvq_train_batch_end(self, run, metrics):
        if run.step % run.config.run.log_every and run.step != run.config.train.max_steps:
            return  # only on logged steps: a norm costs a device sync
        # Gradients of the step just taken are still in .grad (they are cleared at the next step).
        for name, optimizer in run.optimizers.named():  # "model", and a tokenizer run's "discriminator"
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            run.extra_metrics[f"grad_norm/{name}"] = _norm(parameters, self.config.norm_type)


def build(config: GradNormConfig, context=None) -> GradNorm:
    return GradNorm(config)
