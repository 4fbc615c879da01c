"""Spec records of lgvq-tasks (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.specs import ComponentSpec
from lgvq_tasks.config import (
    CodebookConfig,
    MaskedWordsConfig,
    ReconstructionConfig,
    RelationConfig,
    RetrievalConfig,
)

TASKS: list = [
    ComponentSpec(
        name="reconstruction",
        summary="rFID, PSNR, SSIM, LPIPS (with weights) and codebook usage/perplexity on the validation split",
        config_cls=ReconstructionConfig,
        factory="lgvq_tasks.reconstruction:build_reconstruction",
    ),
    ComponentSpec(
        name="retrieval",
        summary="image-to-text retrieval with the global semantic head: R@1/5/10 and an HTML report of top-1 captions",
        config_cls=RetrievalConfig,
        factory="lgvq_tasks.retrieval:build_retrieval",
    ),
    ComponentSpec(
        name="masked-words",
        summary="masked word prediction Recall@1 (Mask-1, Mask-3), leak-free and official input, shuffled-image control",
        config_cls=MaskedWordsConfig,
        factory="lgvq_tasks.masked_words:build_masked_words",
    ),
    ComponentSpec(
        name="relation",
        summary="code-word relationship MSE (Table 4) and word/code cosine heat maps (Fig. 6)",
        config_cls=RelationConfig,
        factory="lgvq_tasks.relation:build_relation",
    ),
    ComponentSpec(
        name="codebook",
        summary="every code decoded on its own, tiled into one PNG (Fig. 7), and a code-usage histogram",
        config_cls=CodebookConfig,
        factory="lgvq_tasks.codebook:build_codebook",
    ),
]
