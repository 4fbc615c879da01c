"""The backbone contract: a VQ image tokenizer the runner can train with or without LG losses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lgvq_core.contracts import ContractError, require_finite_scalar, require_instance
from lgvq_core.quantizers.base import Quantizer


@dataclass
class TokenizerOutput:
    """One forward pass of a tokenizer.

    ``recon`` B×3×H×W; ``quant`` B×D×h×w (straight-through, what the LG losses read);
    ``indices`` B×h×w (or B×k×h×w); ``quantizer_loss`` scalar; ``stats`` detached scalars.
    """

    recon: torch.Tensor
    quant: torch.Tensor
    indices: torch.Tensor
    quantizer_loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Tokenizer(nn.Module):
    """Encoder -> quantizer -> decoder, with its own reconstruction objective.

    Submodules are the generator's parameters only. A backbone with an adversarial loss returns
    its discriminator from :meth:`make_discriminator`; the runner keeps it as a separate module
    (own optimizer, own DDP wrapper, own weights file) and passes it back to the loss methods.
    """

    quantizer: Quantizer
    #: D: channels of ``quant``.
    code_dim: int
    #: Spatial downsampling factor f (latent side = image side / f).
    downsample: int

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``z`` (B×D×h×w) of images in [-1, 1]."""
        raise NotImplementedError

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """Images (B×3×H×W) from codes (B×D×h×w)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        z = self.encode(images)
        q = self.quantizer(z)
        return TokenizerOutput(
            recon=self.decode(q.quant), quant=q.quant, indices=q.indices, quantizer_loss=q.loss, stats=q.stats
        )

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images from code indices."""
        return self.decode(self.quantizer.decode_indices(indices))

    def generator_loss(
        self, images: torch.Tensor, output: TokenizerOutput, step: int, discriminator: nn.Module | None
    ) -> dict[str, torch.Tensor]:
        """Named loss terms of the generator step; ``"total"`` is their weighted sum.

        Includes reconstruction (and perceptual), the quantizer loss and, from ``disc_start`` on,
        the adversarial term with its adaptive weight. Never the alignment losses.
        """
        raise NotImplementedError

    def make_discriminator(self) -> nn.Module | None:
        """A new discriminator for this backbone, or ``None`` when it has no adversarial loss."""
        return None

    def discriminator_loss(
        self, images: torch.Tensor, recon: torch.Tensor, step: int, discriminator: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Named terms of the discriminator step (``"total"`` included); ``recon`` is detached."""
        raise NotImplementedError

    def discriminator_active(self, step: int) -> bool:
        """Whether the discriminator step runs at ``step`` (from ``disc_start`` on)."""
        return False


def check_tokenizer(component: Tokenizer, side: int) -> None:
    """The backbone contract, on two random ``side``-pixel images: shapes of ``recon`` and ``quant``
    (``code_dim``, ``downsample``), a finite generator loss whose gradient reaches the parameters.
    Raises :class:`~lgvq_core.contracts.ContractError`."""
    require_instance(component, Tokenizer)
    images = torch.rand(2, 3, side, side) * 2 - 1
    out = component(images)
    if out.recon.shape != images.shape:
        raise ContractError(f"recon has shape {tuple(out.recon.shape)}, the images {tuple(images.shape)}")
    latent = side // component.downsample
    if out.quant.shape[:2] != (2, component.code_dim) or tuple(out.quant.shape[-2:]) != (latent, latent):
        raise ContractError(
            f"quant has shape {tuple(out.quant.shape)}; expected (2, code_dim={component.code_dim}, "
            f"{latent}, {latent}) for {side}-pixel images and downsample {component.downsample}"
        )
    terms = component.generator_loss(images, out, 0, component.make_discriminator())
    require_finite_scalar(terms.get("total"), "generator_loss()['total']")
    terms["total"].backward()
    if not any(p.grad is not None for p in component.parameters() if p.requires_grad):
        raise ContractError("generator_loss()['total'] gives no gradient to any parameter")
