"""Spec records of the `vqgan` backbone (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_backbones.vqgan.config import VQGANConfig
from lgvq_core.api import BackboneSpec

BACKBONES: list = [
    BackboneSpec(
        name="vqgan",
        summary="VQ-GAN (taming f16): ResNet/attention encoder-decoder, L1 + LPIPS, PatchGAN with adaptive weight",
        config_cls=VQGANConfig,
        factory="lgvq_backbones.vqgan.model:build_vqgan",
        # official LG-VQ = taming's VectorQuantizer2 with legacy=True
        default_quantizer={"type": "vq", "beta_placement": "codebook", "codebook_size": 1024, "dim": 256, "beta": 0.25},
    )
]
QUANTIZERS: list = []
