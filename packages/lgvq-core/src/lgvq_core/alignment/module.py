"""The alignment module: the shared code ViT plus the configured alignment losses.

The runner builds one :class:`AlignmentModule` from the run file's ``[[alignment]]`` tables and
``[code_vit]`` section, calls it once per generator step and adds :meth:`weighted_sum` of its terms
to the generator loss. Its parameters join the generator optimizer; the text encoder is not part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lgvq_core.alignment.base import AlignmentInputs, AlignmentLoss
from lgvq_core.alignment.code_vit import CodeViT
from lgvq_core.text_encoder import TextFeatures


class AlignmentModule(nn.Module):
    """Named alignment losses with their weights, and the code ViT they share (if any uses it)."""

    def __init__(
        self, losses: Mapping[str, AlignmentLoss], weights: Mapping[str, float], code_vit: CodeViT | None
    ) -> None:
        super().__init__()
        missing = [name for name in losses if name not in weights]
        if missing:
            raise ValueError(f"no weight given for alignment loss(es): {', '.join(missing)}")
        needs_vit = [name for name, loss in losses.items() if loss.uses_code_vit]
        if needs_vit and code_vit is None:
            raise ValueError(f"alignment loss(es) {', '.join(needs_vit)} need the code ViT, but none was given")
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = {name: float(weights[name]) for name in losses}
        self.code_vit = code_vit if needs_vit else None

    def forward(
        self,
        quant: torch.Tensor,
        text: TextFeatures,
        codebook: torch.Tensor,
        indices: torch.Tensor,
        text_encoder: Any,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss of each component, keyed by its name (``"semantic-nce"`` ...)."""
        if text.ids.device != quant.device:
            text = text.to(quant.device)
        tokens = global_embedding = features = None
        if self.code_vit is not None:
            features = self.code_vit.features(quant)  # b (1+n) width
            proj = self.code_vit.proj.to(features.dtype)
            if any(loss.reads_vit_tokens for loss in self.losses.values()):
                tokens = features @ proj  # b (1+n) w: the code ViT's output
                global_embedding = self.code_vit.global_embedding(tokens)  # b e
            else:  # the global token alone: row 0 of features @ proj, without the other N rows
                global_embedding = self.code_vit.global_embedding(features[:, :1] @ proj)
        inputs = AlignmentInputs(
            quant=quant,
            text=text,
            vit_tokens=tokens,
            codebook=codebook,
            indices=indices,
            text_encoder=text_encoder,
            vit_global=global_embedding,
            vit_features=features,
            vit_proj=self.code_vit.proj if self.code_vit is not None else None,
        )
        return {name: loss(inputs) for name, loss in self.losses.items()}

    def weighted_sum(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_k weight_k * term_k over the components of this module."""
        total = None
        for name, weight in self.weights.items():
            part = weight * terms[name]
            total = part if total is None else total + part
        if total is None:
            raise ValueError("no alignment loss is configured")
        return total

    def image_embedding(self, quant: torch.Tensor) -> torch.Tensor:
        """B×E global image embedding in the sentence space (image-text retrieval)."""
        if self.code_vit is None:
            raise ValueError("this model has no code ViT (no alignment loss uses one)")
        return self.code_vit.global_embedding(self.code_vit(quant))

    def leak_warnings(self, text_encoder: Any) -> list[str]:
        """Warnings of losses whose text input reveals their targets with this encoder."""
        found = []
        for name, loss in self.losses.items():
            check = getattr(loss, "leak_warning", None)
            message = check(text_encoder) if check is not None else None
            if message:
                found.append(f"{name}: {message}")
        return found


def build_alignment_module(
    losses: list[tuple[str, AlignmentLoss, float]],
    code_vit_layers: int,
    code_vit_heads: int,
    context: Any,
    code_vit_width: int | None = None,
) -> AlignmentModule:
    """Assemble the alignment module from built losses ``(name, loss, weight)``.

    The code ViT is built only when a loss uses it, from ``context.code_dim`` (D),
    ``context.latent_size`` (grid) and ``context.text_encoder`` (W and E); ``code_vit_width``
    (``[code_vit] width``) is its blocks' width, D when ``None``.
    """
    names = [name for name, _, _ in losses]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"alignment loss(es) given more than once: {', '.join(duplicates)}")
    code_vit = None
    if any(loss.uses_code_vit for _, loss, _ in losses):
        encoder = getattr(context, "text_encoder", None)
        code_dim = getattr(context, "code_dim", None)
        latent_size = getattr(context, "latent_size", None)
        if encoder is None or code_dim is None or latent_size is None:
            raise ValueError(
                "the code ViT needs the text encoder, the code dim and the latent grid in the build context "
                f"(got text_encoder={'set' if encoder is not None else None}, code_dim={code_dim}, "
                f"latent_size={latent_size})"
            )
        code_vit = CodeViT(
            code_dim,
            latent_size,
            text_width=encoder.width,
            sentence_dim=encoder.embed_dim,
            layers=code_vit_layers,
            heads=code_vit_heads,
            width=code_vit_width,
        )
    alignment = AlignmentModule(
        {name: loss for name, loss, _ in losses}, {name: weight for name, _, weight in losses}, code_vit
    )
    device = getattr(context, "device", None)
    return alignment.to(device) if device else alignment
