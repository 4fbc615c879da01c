"""Drawing the next code from logits: temperature, top-k, top-p, classifier-free guidance.

The filters are independent options applied in a fixed order: temperature divides the logits,
top-k keeps the k largest (ties at the k-th value are all kept), top-p keeps the smallest set of
most likely codes whose probability (after the earlier filters) reaches p (ties at its boundary
are kept too). Removed codes get ``-inf``. Draws use an explicit ``torch.Generator``, so a seed fixes a whole batch of samples.
"""

from __future__ import annotations

import torch


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Filtered logits ``b V`` (a new tensor); see the module docstring for the order."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits = torch.sort(logits, dim=-1, descending=True).values
        sorted_probs = sorted_logits.softmax(-1)
        before = sorted_probs.cumsum(-1) - sorted_probs  # probability of the more likely codes
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False  # the most likely code always stays
        threshold = sorted_logits.masked_fill(drop_sorted, float("inf")).amin(-1, keepdim=True)
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return logits


def draw(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``logits`` (``b V`` -> ``b``), drawn from their softmax."""
    probs = logits.float().softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: u + s (c - u); s = 0 gives u, s = 1 gives c, s > 1 extrapolates."""
    return unconditional + scale * (conditional - unconditional)


def sampling_settings(model: str, defaults: dict, options: dict) -> dict:
    """``options`` (``None`` values left out) over ``defaults``; a name not in ``defaults`` is an error."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{model}: no sampling option {', '.join(unknown)}; options: {', '.join(defaults)}")
    return {**defaults, **{k: v for k, v in options.items() if v is not None}}
