"""The quantizer contract (paper Eq. 1-2; docs/method.md: Quantizers and β placement)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class QuantizerOutput:
    """What a quantizer returns for ``z`` (B×D×h×w).

    ``quant``: straight-through codes, ``z + sg(z_q - z)`` (B×D×h×w) — every LG loss reads this.
    ``indices``: code indices, B×h×w (or B×k×h×w for quantizers that pick k codes per position).
    ``loss``: the quantizer's loss term (scalar).
    ``stats``: detached scalars for logging (``perplexity``, ``usage`` of this batch, ...).
    """

    quant: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Maps encoder latents to codes.

    Subclasses set ``codebook_size`` (K) and ``dim`` (D) and implement :meth:`forward`,
    :attr:`codebook` and :meth:`decode_indices`.
    """

    codebook_size: int
    dim: int
    #: Codes picked per latent position (indices B×h×w when 1, B×k×h×w when k > 1). Tasks that
    #: read one code per position (``relation``, ``codebook``) refuse a quantizer with more.
    codes_per_position: int = 1

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def codebook(self) -> torch.Tensor:
        """The K×D code vectors actually used for lookup."""
        raise NotImplementedError

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``indices`` (B×h×w, or B×k×h×w) as a B×D×h×w tensor."""
        raise NotImplementedError


def index_problem(indices: torch.Tensor, codebook_size: int) -> str | None:
    """What is wrong with a quantizer's indices (dtype, range), or None: the contract's rule."""
    if indices.dtype != torch.long:
        return f"indices have dtype {indices.dtype}; they index the codebook and must be torch.long"
    if indices.numel() == 0:
        return None
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= codebook_size:
        return (
            f"indices range over [{low}, {high}] but codebook_size is {codebook_size}: every index must be in "
            f"[0, {codebook_size})"
        )
    return None


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Codebook ``usage`` (fraction of codes used) and ``perplexity`` from code counts over a split."""
    total = counts.sum()
    if total <= 0:
        return {"usage": 0.0, "perplexity": 0.0}
    probs = counts.double() / total
    nonzero = probs[probs > 0]
    entropy = -(nonzero * nonzero.log()).sum().item()
    return {"usage": float((counts > 0).double().mean()), "perplexity": math.exp(entropy)}
