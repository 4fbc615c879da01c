"""Optimizer groups of the language-task models: weight decay on Linear weights only."""

from __future__ import annotations

from torch import nn


def linear_weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: Linear weights (decayed) and everything else trainable (biases, norms, embeddings: not).

    Decaying embeddings or norm gains pulls them to zero for no regularising benefit (nanoGPT, ClipCap's
    AdamW setup); frozen parameters are left out.
    """
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]
