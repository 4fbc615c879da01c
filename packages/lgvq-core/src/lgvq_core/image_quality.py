"""PSNR, the one implementation that training validation and the ``reconstruction`` task share."""

from __future__ import annotations

import torch

#: PSNR of an exact reconstruction is capped by this MSE floor (100 dB).
MSE_FLOOR = 1e-10


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Model images in [-1, 1] (values outside are clamped) to [0, 1]."""
    return images.float().clamp(-1, 1).add(1).div(2)


def psnr_per_image(images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """``b``: 10·log10(1 / MSE) of each image pair on [0, 1], in float64."""
    mse = (images.double() - recon.double()).pow(2).flatten(1).mean(1).clamp_min(MSE_FLOOR)
    return 10 * torch.log10(1.0 / mse)
