"""Global semantic alignment, ``type = "semantic-nce"`` (paper Eq. 5; docs/method.md: Global semantic alignment).

Official loss, with v = normalize(global code-ViT token) and t = normalize(sentence) (detached)::

    L = (1/B) sum_i -log( exp(v_i.t_i / tau) / (sum_j exp(v_i.t_j / tau) + 1e-6) ),   tau = 1
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lgvq_core.alignment.base import AlignmentInputs, AlignmentLoss
from lgvq_core.alignment.loss_configs import SemanticNCEConfig

#: CLIP's cap on a learned logit scale (1 / tau <= 100).
MAX_LOGIT_SCALE = 100.0


class SemanticNCELoss(AlignmentLoss):
    """InfoNCE between the code ViT's global token and the caption's sentence embedding.

    Gradient reaches the code ViT (blocks, global token, proj) and through it quant and the encoder;
    the text side is detached.
    """

    uses_code_vit = True
    reads_vit_tokens = False  # the global token (vit_global) is all it reads

    def __init__(self, config: SemanticNCEConfig) -> None:
        super().__init__()
        self.config = config
        if config.learn_temperature:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        else:
            self.register_parameter("logit_scale", None)

    def scale(self) -> torch.Tensor | float:
        """1 / tau: a fixed number, or the learned CLIP logit scale exp(s) clamped at 100."""
        if self.logit_scale is None:
            return 1.0 / self.config.temperature
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, inputs: AlignmentInputs) -> torch.Tensor:
        image = inputs.vit_global if inputs.vit_global is not None else _global_token(inputs)
        sentence = inputs.text.sentence.detach().to(image.dtype)
        if sentence.shape[-1] != image.shape[-1]:
            raise ValueError(
                f"semantic-nce compares the global code token ({image.shape[-1]}-d) with the sentence "
                f"embedding ({sentence.shape[-1]}-d); build the code ViT with sentence_dim = {sentence.shape[-1]}"
            )
        v = F.normalize(image, dim=-1)  # b e
        t = F.normalize(sentence, dim=-1)  # b e
        ids = inputs.text.ids
        if self.config.negatives == "gathered":
            all_v, offset = gather_rows(v)
            all_t, _ = gather_rows(t)
            all_ids, _ = gather_rows(ids)
        else:
            all_v, all_t, all_ids, offset = v, t, ids, 0
        targets = torch.arange(v.shape[0], device=v.device) + offset
        excluded = None
        if self.config.duplicate_captions == "mask":
            # b (world b): another row holds the same caption as the positive
            same = (ids.unsqueeze(1) == all_ids.unsqueeze(0)).all(-1)
            excluded = same & (torch.arange(all_ids.shape[0], device=v.device) != targets.unsqueeze(1))
        scale = self.scale()
        loss = self._nce(scale * v @ all_t.T, targets, excluded)
        if self.config.direction == "symmetric":
            loss = 0.5 * (loss + self._nce(scale * t @ all_v.T, targets, excluded))
        return loss

    def _nce(self, logits: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
        """Mean over rows of -log(exp(l_ii) / (sum_j exp(l_ij) + eps)); ``excluded`` columns are left out."""
        positive = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        if excluded is not None:
            logits = logits.masked_fill(excluded, float("-inf"))
        log_denominator = torch.logsumexp(logits, dim=1)
        eps = self.config.denominator_eps
        if eps > 0:
            # log(sum_j exp(l_ij) + eps), computed without overflow
            log_denominator = torch.logaddexp(log_denominator, torch.full_like(log_denominator, math.log(eps)))
        return (log_denominator - positive).mean()


def _global_token(inputs: AlignmentInputs) -> torch.Tensor:
    if inputs.vit_tokens is None:
        raise ValueError("semantic-nce needs the code ViT tokens; build it through build_alignment_module")
    return inputs.vit_tokens[:, 0]


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` from every DDP process, concatenated in rank order, and the offset of the local rows.

    Only the local rows keep their gradient. Processes may hold different numbers of rows. Without an
    initialised process group this returns ``x`` and 0.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = x.detach().new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    rows = [part[:size] for part, size in zip(parts, sizes, strict=True)]
    rows[rank] = x
    return torch.cat(rows), sum(sizes[:rank])


def build_semantic_nce(config: SemanticNCEConfig, context) -> SemanticNCELoss:
    """Factory of ``semantic-nce`` (the shared code ViT is built by the alignment module)."""
    return SemanticNCELoss(config)
