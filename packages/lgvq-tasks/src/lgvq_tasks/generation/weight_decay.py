"""Optimizer groups with weight decay on Linear weights only (minGPT / taming's convention).

Biases, normalisation parameters, embeddings, positions and learned null conditions are not
decayed: shrinking them towards zero has no regularising meaning.
"""

from __future__ import annotations

from torch import nn


def linear_weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: Linear weights with ``weight_decay``, every other trainable parameter without."""
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if id(parameter) in decayed else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
