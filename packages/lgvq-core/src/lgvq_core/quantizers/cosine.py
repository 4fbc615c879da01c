"""The ``cosine`` quantizer: l2-normalised inputs and codes, so the nearest code is the most similar."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lgvq_core.quantizers.config import CosineVQConfig
from lgvq_core.quantizers.vq import VectorQuantizer, lever_options


class CosineVectorQuantizer(VectorQuantizer):
    """Lookup, loss and straight-through output all live on the unit sphere.

    On unit vectors ||ẑ - ê||² = 2 - 2 cos(ẑ, ê), so the squared-L2 lookup picks the code of
    highest cosine similarity. ``quant = ẑ + sg(ê_q - ẑ)``; ``codebook`` returns the normalised codes.
    With ``lookup_dim`` the latents are projected first and normalised in d dimensions; k-means
    keeps its centres on the sphere, and restarts store the normalised latents.
    """

    unit_codes = True

    def codes_from_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return F.normalize(weight, dim=1)

    def prepare_latents(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().prepare_latents(z), dim=1)


def build_cosine_vq(config: CosineVQConfig, context: Any = None) -> CosineVectorQuantizer:
    return CosineVectorQuantizer(
        config.codebook_size, config.dim, config.beta, config.beta_placement, **lever_options(config)
    )
