"""The alignment-loss contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lgvq_core.alignment.code_vit import CodeViT
from lgvq_core.contracts import require_finite_scalar, require_instance
from lgvq_core.text_encoder import TextFeatures


@dataclass
class AlignmentInputs:
    """Everything an alignment loss may read in one generator step.

    ``quant`` B×D×h×w straight-through codes; ``vit_tokens`` B×(N+1)×W code-ViT output
    (global token first, after ``proj``), ``None`` when no loss asked for the code ViT or no loss
    reads them (every loss's ``reads_vit_tokens`` is false; the factors below are then set);
    ``text`` cached frozen features of the sampled captions; ``codebook`` K×D; ``indices``
    the quantizer's indices; ``text_encoder`` for losses that must re-encode (masked-contextual);
    ``vit_global`` B×E the global token in the sentence space (``vit_tokens[:, 0]`` when E = W);
    ``vit_features`` B×(N+1)×width and ``vit_proj`` width×W the two factors of
    ``vit_tokens = vit_features @ vit_proj`` (a loss may multiply in another order).
    """

    quant: torch.Tensor
    text: TextFeatures
    vit_tokens: torch.Tensor | None
    codebook: torch.Tensor
    indices: torch.Tensor
    text_encoder: Any
    vit_global: torch.Tensor | None = None
    vit_features: torch.Tensor | None = None
    vit_proj: torch.Tensor | None = None


class AlignmentLoss(nn.Module):
    """One language-guided loss. ``forward`` returns a scalar; the runner applies ``weight``.

    Trainable parameters join the generator optimizer. ``uses_code_vit`` tells the alignment
    module whether to run the shared code ViT; ``reads_vit_tokens`` whether this loss reads
    ``inputs.vit_tokens`` (B×(N+1)×W). A loss that needs only the global token (``vit_global``) or
    multiplies the factors ``vit_features @ vit_proj`` itself sets it false: when no loss reads
    them the module never forms the W-wide tokens (and their gradient).
    """

    uses_code_vit: bool = True
    reads_vit_tokens: bool = True

    def forward(self, inputs: AlignmentInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def check_alignment_loss(
    component: AlignmentLoss, encoder: Any, code_dim: int, latent_size: tuple[int, int], captions: list[str]
) -> None:
    """The alignment-loss contract: a finite scalar loss on random ``quant`` (``code_dim`` channels on a
    ``latent_size`` grid), ``captions`` encoded by ``encoder``, and a one-layer code ViT's tokens when
    the loss reads them. Raises :class:`~lgvq_core.contracts.ContractError`."""
    require_instance(component, AlignmentLoss)
    h, w = latent_size
    quant = torch.randn(2, code_dim, h, w, requires_grad=True)
    tokens = global_embedding = None
    if component.uses_code_vit:
        vit = CodeViT(code_dim, (h, w), encoder.width, encoder.embed_dim, layers=1, heads=1)
        tokens = vit(quant)
        global_embedding = vit.global_embedding(tokens)
    codebook = torch.randn(32, code_dim)
    inputs = AlignmentInputs(
        quant=quant,
        text=encoder.encode(list(captions[:2])),
        vit_tokens=tokens,
        codebook=codebook,
        indices=torch.randint(32, (2, h, w)),
        text_encoder=encoder,
        vit_global=global_embedding,
    )
    require_finite_scalar(component(inputs), "the alignment loss")
