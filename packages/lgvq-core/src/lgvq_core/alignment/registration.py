"""Spec records of lgvq-core's built-in alignment (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.alignment.loss_configs import MaskedTextConfig, RelationConfig, SemanticNCEConfig
from lgvq_core.specs import ComponentSpec

ALIGNMENT_LOSSES: list = [
    ComponentSpec(
        name="semantic-nce",
        summary="LG-VQ global semantic alignment: InfoNCE between the code ViT's global token and the sentence",
        config_cls=SemanticNCEConfig,
        factory="lgvq_core.alignment.semantic_nce:build_semantic_nce",
    ),
    ComponentSpec(
        name="masked-text",
        summary="LG-VQ masked text prediction: predict masked caption tokens from the codes",
        config_cls=MaskedTextConfig,
        factory="lgvq_core.alignment.masked_text:build_masked_text",
    ),
    ComponentSpec(
        name="relation",
        summary="LG-VQ relationship alignment: code-code cosines follow word-word cosines",
        config_cls=RelationConfig,
        factory="lgvq_core.alignment.relation:build_relation",
    ),
]
