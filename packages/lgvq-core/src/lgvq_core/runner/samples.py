"""Sample grids: inputs (top row) over reconstructions (bottom row), as PNG."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from lgvq_core.atomic import write_bytes_atomic


@torch.no_grad()
def save_reconstruction_grid(images: torch.Tensor, recon: torch.Tensor, path: Path) -> Path:
    """``images`` and ``recon`` in [-1, 1], B×3×H×W; writes a 2×B grid."""
    count = images.shape[0]
    both = torch.cat([images.float().cpu(), recon.float().cpu()]).clamp(-1, 1).add(1).div(2)
    grid = make_grid(both, nrow=count, padding=2, pad_value=1.0)
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())  # whole or absent, a full disk reported once
    return path
