"""``grad-norm``: the gradient norm of each optimizer's parameters, for either kind of run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lgvq_core.callbacks.config import GradNormConfig
from lgvq_core.callbacks.grad_norm import GradNorm
from lgvq_core.runner.optim import Optimizers


def _parameter(*grad: float) -> torch.nn.Parameter:
    parameter = torch.nn.Parameter(torch.zeros(len(grad)))
    parameter.grad = torch.tensor(grad)
    return parameter


def _run(optimizers: Optimizers) -> SimpleNamespace:
    config = SimpleNamespace(run=SimpleNamespace(log_every=1), train=SimpleNamespace(max_steps=10))
    return SimpleNamespace(step=1, config=config, optimizers=optimizers, extra_metrics={})


def test_a_tokenizer_run_gets_the_model_and_the_discriminator_norms():
    model = torch.optim.SGD([_parameter(3.0), _parameter(0.0, 4.0)], lr=0.1)  # |(3, 0, 4)| = 5
    discriminator = torch.optim.SGD([_parameter(1.0, 1.0)], lr=0.1)  # sqrt(2)
    run = _run(Optimizers(model=model, discriminator=discriminator))

    GradNorm(GradNormConfig()).lgvq_train_batch_end(run, {})

    assert run.extra_metrics == pytest.approx({"grad_norm/model": 5.0, "grad_norm/discriminator": 2**0.5})


def test_a_downstream_run_has_only_its_model_and_the_norm_type_is_used():
    model = torch.optim.AdamW([{"params": [_parameter(3.0, -4.0)]}, {"params": [_parameter(2.0)]}], lr=0.1)
    run = _run(Optimizers(model=model))

    GradNorm(GradNormConfig(norm_type=1.0)).lgvq_train_batch_end(run, {})

    assert run.extra_metrics == pytest.approx({"grad_norm/model": 9.0})  # |3| + |-4| + |2|
