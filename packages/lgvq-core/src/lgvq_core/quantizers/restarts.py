"""Dead-code restarts: codes the latents stopped picking are moved onto latents of the batch.

A small-scale lever against codebook collapse, not part of the official method (docs/method.md:
Quantizers and β placement). ``vq-ema`` restarts from its own EMA counts; ``vq`` and ``cosine``
keep a usage EMA for it (:class:`DeadCodeRestarts`). Both move the codes by
:func:`restart_dead_codes`.
"""

from __future__ import annotations

import torch
from torch import nn

from lgvq_core.quantizers.distributed import from_rank_zero, sum_over_ranks


@torch.no_grad()
def restart_dead_codes(
    codes: torch.Tensor,
    hidden_count: torch.Tensor,
    flat: torch.Tensor,
    dead: torch.Tensor,
    hidden_threshold: torch.Tensor,
) -> torch.Tensor:
    """Move the rows of ``codes`` (K×d) where ``dead`` (K) onto random rows of ``flat`` ((b h w) d), in place.

    The hidden (not yet debiased) EMA count of a moved code, in ``hidden_count`` (K), becomes
    ``hidden_threshold``: the code starts from the threshold, not from zero. One row is drawn for
    every code (fixed shapes, no host sync) and used only where ``dead``; under
    ``torch.distributed`` every rank takes rank 0's draws. Returns the K×d draws.
    """
    samples = flat[torch.randint(flat.shape[0], (codes.shape[0],), device=flat.device)]  # k d
    from_rank_zero(samples)
    codes.copy_(torch.where(dead[:, None], samples, codes))
    hidden_count.copy_(torch.where(dead, hidden_threshold, hidden_count))
    return samples


class DeadCodeRestarts(nn.Module):
    """How often each code is picked, as an EMA, and restarts of the codes that fall below a threshold.

    ``usage_count`` holds the hidden EMA of the batch counts, h_t = decay·h_{t-1} + (1 - decay)·c_t
    from h_0 = 0, and ``usage_steps`` the number of updates t; a code's usage is the zero-debiased
    h_t / (1 - decay^t), as ``vq-ema`` reads its counts, so the first step reads the batch counts
    themselves rather than (1 - decay) of them. Under ``torch.distributed`` the batch counts are summed
    over ranks first: the threshold is on the global batch, and every rank restarts the same codes.
    """

    def __init__(self, codebook_size: int, threshold: float, decay: float = 0.99) -> None:
        super().__init__()
        if threshold <= 0:
            raise ValueError(f"dead_code_threshold must be > 0 for restarts, got {threshold}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {decay}")
        self.threshold = threshold
        self.decay = decay
        self.register_buffer("usage_count", torch.zeros(codebook_size))
        self.register_buffer("usage_steps", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, decay={self.decay}"

    @torch.no_grad()
    def update(self, codes: torch.Tensor, flat: torch.Tensor, counts: torch.Tensor) -> None:
        """One usage step from the batch code ``counts`` (K), then restart ``codes`` (K×d) from ``flat``."""
        batch_counts = sum_over_ranks(counts.to(self.usage_count.dtype, copy=True))
        self.usage_steps += 1
        self.usage_count.lerp_(batch_counts, 1.0 - self.decay)
        debias = 1.0 - self.decay ** self.usage_steps.to(self.usage_count.dtype)
        dead = self.usage_count / debias < self.threshold
        restart_dead_codes(codes, self.usage_count, flat, dead, self.threshold * debias)
