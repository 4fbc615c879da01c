"""Spec records of lgvq-core's built-in quantizers (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.quantizers.config import CosineVQConfig, EMAVQConfig, VQConfig
from lgvq_core.specs import ComponentSpec

QUANTIZERS: list = [
    ComponentSpec(
        name="vq",
        summary="nearest code (squared L2) with a learned codebook; beta on the commitment or codebook term; "
        "optional k-means init, dead-code restarts and factorised (lookup_dim) codes",
        config_cls=VQConfig,
        factory="lgvq_core.quantizers.vq:build_vq",
    ),
    ComponentSpec(
        name="vq-ema",
        summary="nearest code with an EMA codebook (sonnet), Laplace smoothing, optional dead-code restarts and "
        "k-means init",
        config_cls=EMAVQConfig,
        factory="lgvq_core.quantizers.ema:build_ema_vq",
    ),
    ComponentSpec(
        name="cosine",
        summary="nearest code by cosine similarity on l2-normalised inputs and codes; optional k-means init, "
        "dead-code restarts and factorised (lookup_dim) codes",
        config_cls=CosineVQConfig,
        factory="lgvq_core.quantizers.cosine:build_cosine_vq",
    ),
]
