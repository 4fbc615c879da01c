"""Spec records of the `vqvae` backbone (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_backbones.vqvae.config import VQVAEConfig
from lgvq_core.api import BackboneSpec

BACKBONES: list = [
    BackboneSpec(
        name="vqvae",
        summary="VQ-VAE (Oord et al. 2017): strided convs + residual blocks, MSE + VQ loss, no GAN",
        config_cls=VQVAEConfig,
        factory="lgvq_backbones.vqvae.model:build_vqvae",
        default_quantizer={"type": "vq", "beta_placement": "commitment", "codebook_size": 1024, "dim": 256},
    )
]
QUANTIZERS: list = []
