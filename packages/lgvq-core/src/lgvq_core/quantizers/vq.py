"""The ``vq`` quantizer: nearest code by squared L2, straight-through, learned codebook.

Paper Eq. 1-2; docs/method.md: Quantizers and β placement.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lgvq_core.quantizers.base import Quantizer, QuantizerOutput
from lgvq_core.quantizers.config import VQConfig
from lgvq_core.quantizers.lookup import (
    batch_code_stats,
    code_counts,
    flatten_latents,
    lookup_codes,
    nearest_codes,
    quantize_straight_through,
)


def loss_weights(beta: float, beta_placement: str) -> tuple[float, float]:
    """(weight of ||z_q - sg z||², weight of ||sg z_q - z||²) for a beta placement."""
    if beta_placement == "commitment":
        return 1.0, beta
    if beta_placement == "codebook":
        return beta, 1.0
    raise ValueError(f'beta_placement must be "commitment" or "codebook", got {beta_placement!r}')


class NearestCodeQuantizer(Quantizer):
    """Shared forward of the codebook quantizers: lookup, loss, straight-through, batch stats.

    ``quant = z + sg(z_q - z)``; loss ``w_q·||z_q - sg z||² + w_z·||sg z_q - z||²`` (means) with
    ``codebook_weight`` w_q and ``commitment_weight`` w_z. The lookup, the loss and the
    straight-through output all reuse one detached difference ``z_q - z``. Subclasses provide
    ``codebook`` and may normalise the latents or update the codebook after the lookup.
    """

    codebook_weight: float
    commitment_weight: float

    def check_latents(self, z: torch.Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects latents of shape B×{self.dim}×h×w, got {tuple(z.shape)}")

    def prepare_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The latents as they are looked up (the cosine quantizer normalises them)."""
        return z

    def after_lookup(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """Called with the detached ``(b h w) d`` latents, their codes and the code counts."""

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self.check_latents(z)
        codebook = self.codebook
        z = self.prepare_latents(z.to(codebook.dtype))
        batch, _, height, width = z.shape
        with torch.no_grad():
            flat = flatten_latents(z)  # (b h w) d
            indices = nearest_codes(flat, codebook)  # (b h w)
        quant, loss = quantize_straight_through(
            z, codebook, flat, indices, self.codebook_weight, self.commitment_weight
        )
        counts = code_counts(indices, self.codebook_size)
        self.after_lookup(flat, indices, counts)
        return QuantizerOutput(
            quant=quant, indices=indices.view(batch, height, width), loss=loss, stats=batch_code_stats(counts)
        )

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return lookup_codes(indices, self.codebook)


class VectorQuantizer(NearestCodeQuantizer):
    """Codebook ``embedding`` (K×D, init U(-1/K, 1/K)) trained by the VQ loss; beta as placed."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, beta_placement: str = "commitment") -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.beta_placement = beta_placement
        self.codebook_weight, self.commitment_weight = loss_weights(beta, beta_placement)
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, "
            f"beta_placement={self.beta_placement!r}"
        )


def build_vq(config: VQConfig, context: Any = None) -> VectorQuantizer:
    return VectorQuantizer(config.codebook_size, config.dim, config.beta, config.beta_placement)
