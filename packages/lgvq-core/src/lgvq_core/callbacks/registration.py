"""Spec records of lgvq-core's built-in callbacks (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.callbacks.config import EarlyStoppingConfig, GradNormConfig
from lgvq_core.specs import ComponentSpec

CALLBACKS = [
    ComponentSpec(
        name="early-stopping",
        summary="stop when a validation metric has not improved for `patience` validations",
        config_cls=EarlyStoppingConfig,
        factory="lgvq_core.callbacks.early_stopping:build",
    ),
    ComponentSpec(
        name="grad-norm",
        summary="log generator/discriminator gradient norms with the metrics",
        config_cls=GradNormConfig,
        factory="lgvq_core.callbacks.grad_norm:build",
    ),
]
