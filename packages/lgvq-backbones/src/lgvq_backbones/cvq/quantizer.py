"""The CVQ quantizer (Zheng & Vedaldi 2023, as copied into LG-VQ's ``LG_cvq``; docs/method.md: CVQ).

A nearest-code quantizer whose rarely used ("dead") codes are pulled onto encoder features at every
training step, so the whole codebook stays in use:

* similarity ``d[n, k]`` (larger = closer) from the **detached** latents, in one matmul;
* a usage EMA ``p_k`` of the fraction of positions assigned to each code;
* online re-initialisation ``e_k <- (1 - a_k) e_k + a_k anchor_k`` with
  ``a_k = exp(-p_k K 10 / (1 - decay) - 1e-3)``: a code in use keeps ``a_k ~ 0``, an unused one is
  replaced almost entirely by its anchor (a feature of the current batch);
* an optional contrastive term that moves each code towards its closest features and away from the
  farthest half of the batch (only the codebook gets its gradient, since the latents are detached).

Distributed training: every rank must hold the same codebook. Usage counts are summed over ranks
before the EMA, and the anchors are drawn on rank 0 and broadcast, so the re-initialisation is
identical everywhere (anchors therefore come from rank 0's share of the batch). Gradients of the
commitment and contrastive terms are averaged by DDP as usual.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lgvq_backbones.cvq.config import CVQConfig
from lgvq_core.api import (
    BuildContext,
    Quantizer,
    QuantizerOutput,
    batch_code_stats,
    code_counts,
    flatten_latents,
    lookup_codes,
    split_squared_error,
    unflatten_codes,
)
from lgvq_core.api import vq_loss_weights as loss_weights

Distance = Literal["l2", "cos"]
Anchor = Literal["closest", "random", "probrandom"]

#: Temperature of the contrastive term (fixed in CVQ).
CONTRASTIVE_TEMPERATURE = 0.07


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def similarity(z: torch.Tensor, codebook: torch.Tensor, distance: Distance) -> torch.Tensor:
    """``d`` (n×K), larger = closer: ``-||z||² - ||e||² + 2 z·e`` (l2) or ``cos(z, e)``.

    ``z`` (n×D) should be detached by the caller; gradients reach ``codebook`` only.
    """
    if distance == "l2":
        z_sq = z.pow(2).sum(1, keepdim=True)  # n 1
        e_sq = codebook.pow(2).sum(1)  # K
        return torch.addmm(-z_sq - e_sq, z, codebook.t(), beta=1.0, alpha=2.0)
    if distance == "cos":
        return F.normalize(z, dim=1) @ F.normalize(codebook, dim=1).t()
    raise ValueError(f"distance must be 'l2' or 'cos', got {distance!r}")


def reinit_rate(usage: torch.Tensor, decay: float) -> torch.Tensor:
    """Per-code replacement weight ``a_k = exp(-p_k K 10 / (1 - decay) - 1e-3)``."""
    codebook_size = usage.shape[0]
    return torch.exp(-usage * codebook_size * 10.0 / (1.0 - decay) - 1e-3)


def contrastive_loss(d: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """CVQ's code-to-feature contrastive term from the similarity ``d`` (n×K).

    Per code k: the positive is the mean of its ``max(1, n // K)`` largest similarities, the
    negatives are its ``n // 2`` smallest; loss = cross-entropy of ``[pos, negs] / 0.07`` with
    target 0, averaged over codes.
    """
    n = d.shape[0]
    positives = d.topk(max(1, n // codebook_size), dim=0).values.mean(0, keepdim=True)  # 1 K
    negatives = d.topk(n // 2, dim=0, largest=False).values  # (n//2) K
    logits = torch.cat([positives, negatives], dim=0).t() / CONTRASTIVE_TEMPERATURE  # K (1 + n//2)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


class FeaturePool(nn.Module):
    """A size-K store of past latents, the source of ``anchor = "random"``.

    While filling, a batch that fits in the free space is appended; a batch larger than the pool
    replaces it with a random draw (with replacement) of the batch. Once full, a small batch
    overwrites random slots and a large one again replaces the whole pool. A batch that fits in
    the pool but not in its free space crashes the official pool (it assigns the batch to a
    slice that is too short); here what fits is appended and the rest overwrites random slots.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("features", (torch.rand(size, dim) * 2 - 1) / size)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, features: torch.Tensor) -> torch.Tensor:
        """Store ``features`` (n×D) and return the pool (K×D)."""
        n = features.shape[0]
        features = features.to(self.features.dtype)
        filled = int(self.filled)
        if n > self.size:
            draw = torch.randint(0, n, (self.size,), device=features.device)
            self.features.copy_(features[draw])
            self.filled.fill_(self.size)
        elif filled < self.size:
            # The official pool raises on a batch that overflows the free space (shape mismatch);
            # here the part that fits fills the pool and the rest overwrites random slots.
            room = self.size - filled
            self.features[filled : filled + min(n, room)] = features[:room]
            if n > room:
                slots = torch.randperm(self.size, device=features.device)[: n - room]
                self.features[slots] = features[room:]
            self.filled.fill_(min(self.size, filled + n))
        else:
            slots = torch.randperm(self.size, device=features.device)[:n]
            self.features[slots] = features
        return self.features


class CVQQuantizer(Quantizer):
    """Nearest-code quantizer with online clustered re-initialisation of unused codes."""

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        beta_placement: Literal["commitment", "codebook"] = "commitment",
        distance: Distance = "l2",
        anchor: Anchor = "probrandom",
        first_batch: bool = False,
        contras_loss: bool = True,
        decay: float = 0.99,
        update_in_discriminator_pass: bool = True,
    ) -> None:
        super().__init__()
        if distance not in ("l2", "cos"):
            raise ValueError(f"distance must be 'l2' or 'cos', got {distance!r}")
        if anchor not in ("closest", "random", "probrandom"):
            raise ValueError(f"anchor must be 'closest', 'random' or 'probrandom', got {anchor!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.beta_placement = beta_placement
        self.codebook_weight, self.commitment_weight = loss_weights(beta, beta_placement)
        self.distance = distance
        self.anchor = anchor
        self.first_batch = first_batch
        self.contras_loss = contras_loss
        self.decay = decay
        #: Read by the training step: re-run the tokenizer (train mode, no grad) in the discriminator
        #: pass, after the generator update, as the official two-optimizer loop does (see CVQConfig).
        self.update_in_discriminator_pass = update_in_discriminator_pass
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        #: p_k: EMA of the fraction of positions assigned to each code (starts at 0: all "dead").
        self.register_buffer("code_usage", torch.zeros(codebook_size))
        #: With ``first_batch``: whether the one-shot re-initialisation has happened.
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.pool = FeaturePool(codebook_size, dim) if anchor == "random" else None

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return lookup_codes(indices, self.embedding.weight)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"cvq expects latents of shape B×{self.dim}×h×w, got {tuple(z.shape)}")
        # Distances, assignments and re-initialisation in float32 even under autocast.
        with torch.autocast(z.device.type, enabled=False):
            return self._quantize(z.float())

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        batch, _, height, width = z.shape
        flat = flatten_latents(z)  # (b h w) d
        latents = flat.detach()
        # A copy of the weights enters the graph, so the in-place re-initialisation below leaves
        # the saved tensors of this step's backward intact (the gradient still reaches the weights).
        codebook = self.embedding.weight.float().clone()
        d = similarity(latents, codebook, self.distance)  # (b h w) k
        indices = d.argmax(1)  # (b h w)
        z_q = F.embedding(indices, codebook)  # (b h w) d
        difference = (z_q - flat).detach()
        loss = split_squared_error(z_q, flat, difference, self.codebook_weight, self.commitment_weight)
        counts = code_counts(indices, self.codebook_size)
        extra: dict[str, torch.Tensor] = {}
        if self.training:
            if _distributed():
                dist.all_reduce(counts)
            self._update_usage(counts)
            if not (self.first_batch and bool(self.initialised)):
                self._reinitialise(d.detach(), latents)
            if self.contras_loss:
                contrastive = contrastive_loss(d, self.codebook_size)
                loss = loss + contrastive
                extra["contrastive_loss"] = contrastive.detach()
        quant = z + unflatten_codes(difference, batch, height, width)  # b d h w
        stats = {**batch_code_stats(counts), **extra}
        return QuantizerOutput(quant=quant, indices=indices.view(batch, height, width), loss=loss, stats=stats)

    @torch.no_grad()
    def _update_usage(self, counts: torch.Tensor) -> None:
        fraction = counts / counts.sum().clamp_min(1.0)
        self.code_usage.mul_(self.decay).add_(fraction.to(self.code_usage.dtype), alpha=1.0 - self.decay)

    @torch.no_grad()
    def _anchors(self, d: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One anchor feature per code (K×D) from this batch's latents (n×D) and similarity (n×K)."""
        if self.anchor == "closest":
            return latents[d.argmax(0)]
        if self.anchor == "probrandom":
            probs = torch.softmax(d.t().float(), dim=1)  # K n
            return latents[torch.multinomial(probs, 1).squeeze(1)]
        assert self.pool is not None
        return self.pool.query(latents).clone()

    @torch.no_grad()
    def _reinitialise(self, d: torch.Tensor, latents: torch.Tensor) -> None:
        weight = self.embedding.weight
        anchors = self._anchors(d, latents).to(weight.dtype).contiguous()
        if _distributed():
            dist.broadcast(anchors, src=0)
        rate = reinit_rate(self.code_usage, self.decay).to(weight.dtype).unsqueeze(1)  # K 1
        weight.mul_(1.0 - rate).add_(rate * anchors)
        if self.first_batch:
            self.initialised.fill_(True)

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, distance={self.distance!r}, "
            f"anchor={self.anchor!r}, contras_loss={self.contras_loss}, first_batch={self.first_batch}, "
            f"update_in_discriminator_pass={self.update_in_discriminator_pass}"
        )


def build_cvq_quantizer(config: CVQConfig, context: BuildContext | None = None) -> CVQQuantizer:
    return CVQQuantizer(
        config.codebook_size,
        config.dim,
        beta=config.beta,
        beta_placement=config.beta_placement,
        distance=config.distance,
        anchor=config.anchor,
        first_batch=config.first_batch,
        contras_loss=config.contras_loss,
        decay=config.decay,
        update_in_discriminator_pass=config.update_in_discriminator_pass,
    )
