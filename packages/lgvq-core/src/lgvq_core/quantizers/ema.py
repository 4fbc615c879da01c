"""The ``vq-ema`` quantizer: codebook = exponential moving averages of the latents it receives.

Follows sonnet's ``VectorQuantizerEMA`` (``sonnet/src/nets/vqvae.py``): per code k, the EMA count
N_k and the EMA sum m_k of the latents assigned to it, both zero-debiased like sonnet's
``ExponentialMovingAverage`` (so the first step uses the batch statistics themselves); Laplace
smoothing N_k <- (N_k + eps) / (n + K eps) · n with n = Σ N_k; then e_k = m_k / N_k. The codebook
gets no gradient; the loss is the commitment term only.

With ``init = "kmeans"`` the k-means clustering of the first training batch counts as the first EMA
step: N_k = the cluster size (times the world size under ``torch.distributed``, where the counts
are sums over ranks) and m_k = N_k · centre_k, debiased, so e_k = centre_k and the update of that
same forward is the second step.
"""

from __future__ import annotations

from typing import Any

import torch

from lgvq_core.quantizers.config import EMAVQConfig
from lgvq_core.quantizers.distributed import sum_over_ranks, world_size
from lgvq_core.quantizers.restarts import restart_dead_codes
from lgvq_core.quantizers.vq import NearestCodeQuantizer


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
        *,
        init: str = "uniform",
        kmeans_iters: int = 10,
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
        self.configure_init(init, kmeans_iters)

    @property
    def stored_codes(self) -> torch.Tensor:
        return self.embedding

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def adopt_kmeans(self, centres: torch.Tensor, sizes: torch.Tensor) -> None:
        """The clustering as the first EMA step: debiased N_k = cluster size, m_k = N_k · centre_k."""
        super().adopt_kmeans(centres, sizes)
        hidden_count = sizes * (world_size() * (1.0 - self.decay))  # (1 - decay^1) · N_k
        self.ema_count.copy_(hidden_count)
        self.ema_sum.copy_(centres * hidden_count[:, None])
        self.ema_steps.fill_(1)

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, decay={self.decay}, "
            f"epsilon={self.epsilon}, dead_code_threshold={self.dead_code_threshold}{self.init_repr()}"
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
        sum_over_ranks(statistics)
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

        A restarted code starts from count = threshold and sum = threshold · latent
        (:func:`~lgvq_core.quantizers.restarts.restart_dead_codes`, shared with ``vq`` and ``cosine``).
        """
        hidden_count = self.dead_code_threshold * debias
        samples = restart_dead_codes(self.embedding, self.ema_count, flat, dead, hidden_count)
        self.ema_sum.copy_(torch.where(dead[:, None], samples * hidden_count, self.ema_sum))


def build_ema_vq(config: EMAVQConfig, context: Any = None) -> EMAVectorQuantizer:
    return EMAVectorQuantizer(
        config.codebook_size,
        config.dim,
        config.beta,
        config.decay,
        config.epsilon,
        config.dead_code_threshold,
        init=config.init,
        kmeans_iters=config.kmeans_iters,
    )
