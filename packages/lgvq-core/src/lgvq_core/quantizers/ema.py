"""The ``vq-ema`` quantizer: codebook = exponential moving averages of the latents it receives.

Follows sonnet's ``VectorQuantizerEMA`` (``sonnet/src/nets/vqvae.py``): per code k, the EMA count
N_k and the EMA sum m_k of the latents assigned to it, both zero-debiased like sonnet's
``ExponentialMovingAverage`` (so the first step uses the batch statistics themselves); Laplace
smoothing N_k <- (N_k + eps) / (n + K eps) · n with n = Σ N_k; then e_k = m_k / N_k. The codebook
gets no gradient; the loss is the commitment term only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from lgvq_core.quantizers.config import EMAVQConfig
from lgvq_core.quantizers.vq import NearestCodeQuantizer


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EMAVectorQuantizer(NearestCodeQuantizer):
    """Nearest code with an EMA codebook; updates happen only in training mode.

    Under ``torch.distributed`` the batch counts and sums are summed over ranks before the update,
    and restarted codes come from rank 0, so every rank keeps the same codebook.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.decay = decay
        self.epsilon = epsilon
        self.dead_code_threshold = dead_code_threshold
        self.codebook_weight, self.commitment_weight = 0.0, beta
        embedding = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("embedding", embedding)
        #: Hidden (not yet debiased) EMA of the code counts (K) and code sums (K×D), and the update count.
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, dim))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, decay={self.decay}, "
            f"epsilon={self.epsilon}, dead_code_threshold={self.dead_code_threshold}"
        )

    def after_lookup(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        if self.training:
            self.update(flat, indices, counts)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """One EMA step from ``flat`` ((b h w) d), its ``indices`` and the code ``counts``."""
        # k (1 + d): counts and sums travel together, one all-reduce
        statistics = torch.cat([counts.to(flat.dtype)[:, None], flat.new_zeros(self.codebook_size, self.dim)], dim=1)
        statistics[:, 1:].index_add_(0, indices, flat)
        if _distributed():
            dist.all_reduce(statistics)
        self.ema_steps += 1
        self.ema_count.lerp_(statistics[:, 0], 1.0 - self.decay)
        self.ema_sum.lerp_(statistics[:, 1:], 1.0 - self.decay)
        debias = 1.0 - self.decay ** self.ema_steps.to(flat.dtype)
        count = self.ema_count / debias  # N_k
        total = count.sum()
        smoothed = (count + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.embedding.copy_(self.ema_sum / debias / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat, count < self.dead_code_threshold, debias)

    def _restart_dead_codes(self, flat: torch.Tensor, dead: torch.Tensor, debias: torch.Tensor) -> None:
        """Move codes whose EMA count is below the threshold onto random latents of the batch.

        A restarted code starts from count = threshold and sum = threshold · latent. One latent is
        drawn for every code (fixed shapes, no host sync) and used only where ``dead``.
        """
        samples = flat[torch.randint(flat.shape[0], (self.codebook_size,), device=flat.device)]  # k d
        if _distributed():
            dist.broadcast(samples, src=0)
        dead_rows = dead[:, None]
        self.embedding.copy_(torch.where(dead_rows, samples, self.embedding))
        hidden_count = self.dead_code_threshold * debias
        self.ema_count.copy_(torch.where(dead, hidden_count, self.ema_count))
        self.ema_sum.copy_(torch.where(dead_rows, samples * hidden_count, self.ema_sum))


def build_ema_vq(config: EMAVQConfig, context: Any = None) -> EMAVectorQuantizer:
    return EMAVectorQuantizer(
        config.codebook_size, config.dim, config.beta, config.decay, config.epsilon, config.dead_code_threshold
    )
