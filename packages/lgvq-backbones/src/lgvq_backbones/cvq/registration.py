"""Spec records of the `cvq` backbone and quantizer (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_backbones.cvq.config import CVQBackboneConfig, CVQConfig
from lgvq_core.api import BackboneSpec, ComponentSpec

BACKBONES: list = [
    BackboneSpec(
        name="cvq",
        summary="VQ-GAN (taming f16) with the CVQ quantizer: online re-initialisation of unused codes (LG_cvq)",
        config_cls=CVQBackboneConfig,
        factory="lgvq_backbones.cvq.backbone:build_cvq_backbone",
        default_quantizer={"type": "cvq"},
    )
]
QUANTIZERS: list = [
    ComponentSpec(
        name="cvq",
        summary="CVQ: nearest code; unused codes re-anchored on batch features every step; contrastive term",
        config_cls=CVQConfig,
        factory="lgvq_backbones.cvq.quantizer:build_cvq_quantizer",
    )
]
