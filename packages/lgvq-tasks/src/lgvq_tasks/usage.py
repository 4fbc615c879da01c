"""Codebook usage over a whole split, as a torchmetrics metric (code counts are summed across processes)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from lgvq_core.api import usage_from_counts


class CodeUsage(Metric):
    """Counts of each code over every ``update``; :meth:`compute` gives usage and perplexity.

    docs/method.md: Quantizers and β placement.
    """

    full_state_update = False

    def __init__(self, codebook_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.add_state("counts", default=torch.zeros(codebook_size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, indices: torch.Tensor) -> None:
        """``indices`` of any shape (b h w, b k h w): every entry is one use of that code."""
        flat = indices.detach().flatten().long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.codebook_size):
            raise ValueError(
                f"code indices must lie in [0, {self.codebook_size}), got [{int(flat.min())}, {int(flat.max())}]"
            )
        self.counts += torch.bincount(flat, minlength=self.codebook_size).to(self.counts)

    def compute(self) -> dict[str, float]:
        return usage_from_counts(self.counts)
