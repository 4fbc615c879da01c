"""Spec records of lgvq-tasks (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.api import ComparisonRow, ComponentSpec, DownstreamSpec, TaskSpec
from lgvq_tasks.config import (
    CodebookConfig,
    CodeProbeConfig,
    GenerationFIDConfig,
    MaskedWordsConfig,
    ReconstructionConfig,
    RelationConfig,
    RetrievalConfig,
)
from lgvq_tasks.generation.config import CodeGPTConfig, TextToImageConfig
from lgvq_tasks.language.config import (
    CaptioningConfig,
    CaptionScoresConfig,
    GroundingConfig,
    LanguageScoresConfig,
    VQAConfig,
    VQAScoresConfig,
)

TASKS: list = [
    TaskSpec(
        name="caption-scores",
        summary="BLEU-4, ROUGE-L, CIDEr-D (METEOR with Java) of a captioning run, with a shuffled-image control",
        config_cls=CaptionScoresConfig,
        factory="lgvq_tasks.language.tasks:build_caption_scores",
        comparison_controls=("shuffled_images", "most_frequent_caption"),
    ),
    TaskSpec(
        name="vqa-scores",
        summary="VQA accuracy and WUPS@0.9/@0.0, overall and per question type, with a shuffled-image control "
        "and the question-only baseline",
        config_cls=VQAScoresConfig,
        factory="lgvq_tasks.language.tasks:build_vqa_scores",
        comparison_controls=("shuffled_images", "question_only", "answer_prior"),
    ),
    TaskSpec(
        name="grounding-scores",
        summary="visual grounding Acc@0.5 and mean IoU, and a picture of predicted vs true boxes",
        config_cls=LanguageScoresConfig,
        factory="lgvq_tasks.language.tasks:build_grounding_scores",
        comparison_controls=("shuffled_images", "constant_box"),
    ),
    TaskSpec(
        name="generation-fid",
        summary="FID of a downstream model's samples against the validation images, with every setting that decides it",
        config_cls=GenerationFIDConfig,
        factory="lgvq_tasks.generation_fid:build_generation_fid",
        comparison_controls=("floor", "ceiling"),
    ),
    TaskSpec(
        name="reconstruction",
        summary="rFID, PSNR, SSIM, LPIPS (with weights) and codebook usage/perplexity on the validation split",
        config_cls=ReconstructionConfig,
        factory="lgvq_tasks.reconstruction:build_reconstruction",
        comparison_rows=(
            ComparisonRow("PSNR", ("psnr",), "higher"),
            ComparisonRow("SSIM", ("ssim",), "higher"),
            ComparisonRow("rFID", ("fid",), "lower"),
            ComparisonRow("LPIPS", ("lpips",), "lower"),
            ComparisonRow("codebook usage", ("usage",), "higher"),
            ComparisonRow("perplexity", ("perplexity",), "higher"),
        ),
        comparison_order=10,
    ),
    TaskSpec(
        name="retrieval",
        summary="image-to-text retrieval with the global semantic head: R@1/5/10 and an HTML report of top-1 captions",
        config_cls=RetrievalConfig,
        factory="lgvq_tasks.retrieval:build_retrieval",
        comparison_rows=(
            ComparisonRow("retrieval R@1", ("r@1",), "higher"),
            ComparisonRow("retrieval R@5", ("r@5",), "higher"),
            ComparisonRow("retrieval R@1 by chance", ("chance_r@1",)),
            ComparisonRow("retrieval head", ("matcher",)),
        ),
        comparison_order=20,
    ),
    TaskSpec(
        name="masked-words",
        summary="masked word prediction Recall@1 (Mask-1, Mask-3), leak-free and official input, shuffled-image control",
        config_cls=MaskedWordsConfig,
        factory="lgvq_tasks.masked_words:build_masked_words",
        comparison_rows=(
            ComparisonRow("masked words Mask-1 R@1, leak-free", ("leak-free", "mask-1", "recall@1"), "higher"),
            ComparisonRow("masked words Mask-3 R@1, leak-free", ("leak-free", "mask-3", "recall@1"), "higher"),
            ComparisonRow(
                "masked words Mask-1 R@1, leak-free, images shuffled", ("leak-free", "mask-1", "shuffled_recall@1")
            ),
            ComparisonRow("masked words Mask-1 R@1, official (leaky)", ("official", "mask-1", "recall@1"), "higher"),
            ComparisonRow("masked words Mask-3 R@1, official (leaky)", ("official", "mask-3", "recall@1"), "higher"),
            ComparisonRow(
                "masked words Mask-1 R@1, official, images shuffled", ("official", "mask-1", "shuffled_recall@1")
            ),
            ComparisonRow("masked-text head", ("matcher",)),
        ),
        comparison_order=30,
    ),
    TaskSpec(
        name="relation",
        summary="code-word relationship MSE (Table 4) and word/code cosine heat maps (Fig. 6)",
        config_cls=RelationConfig,
        factory="lgvq_tasks.relation:build_relation",
        comparison_rows=(
            ComparisonRow("relation MSE", ("mse",), "lower"),
            ComparisonRow("relation matcher", ("matcher",)),
        ),
        comparison_order=40,
    ),
    TaskSpec(
        name="codebook",
        summary="every code decoded on its own, tiled into one PNG (Fig. 7), and a code-usage histogram",
        config_cls=CodebookConfig,
        factory="lgvq_tasks.codebook:build_codebook",
        comparison_rows=(ComparisonRow("codes never used", ("dead_codes",), "lower"),),
        comparison_order=50,
    ),
    ComponentSpec(
        name="code-probe",
        summary="linear and MLP probes on the frozen code vectors predict each image's attributes, with a "
        "shuffled-label control and the majority rate",
        config_cls=CodeProbeConfig,
        factory="lgvq_tasks.code_probe:build_code_probe",
    ),
]


#: ``[train]`` defaults of taming's transformers: AdamW (0.9, 0.95), weight decay 0.01 on Linear
#: weights, lr = 4.5e-6 x images per step (the run file's linear scaling rule).
_PRIOR_TRAIN = {"betas": [0.9, 0.95], "weight_decay": 0.01, "base_lr": 4.5e-6, "lr_scaling": "linear"}

#: ClipCap / TransVG train with AdamW and a constant rate; lgvq keeps its linear rule off for them.
_LANGUAGE_TRAIN = {"betas": [0.9, 0.999], "weight_decay": 0.01, "base_lr": 2e-5, "lr_scaling": "none"}

DOWNSTREAM: list = [
    DownstreamSpec(
        name="captioning",
        summary="ClipCap-style captioning: visual tokens of the frozen codebook as the prefix of a causal LM",
        config_cls=CaptioningConfig,
        factory="lgvq_tasks.language.captioning:build_captioning",
        default_train=_LANGUAGE_TRAIN,
    ),
    DownstreamSpec(
        name="vqa",
        summary="VQA as answer classification from the LM's last question state (optionally from a captioning run)",
        config_cls=VQAConfig,
        factory="lgvq_tasks.language.vqa:build_vqa",
        default_train=_LANGUAGE_TRAIN,
    ),
    DownstreamSpec(
        name="grounding",
        summary="TransVG-style grounding: [REG; text states; visual tokens] -> box, L1 + GIoU",
        config_cls=GroundingConfig,
        factory="lgvq_tasks.language.grounding:build_grounding",
        default_train=_LANGUAGE_TRAIN,
    ),
    DownstreamSpec(
        name="code-gpt",
        summary="decoder-only transformer prior over raster codes: unconditional, completion, semantic, text (KV cache)",
        config_cls=CodeGPTConfig,
        factory="lgvq_tasks.generation.code_gpt:build_code_gpt",
        default_train=_PRIOR_TRAIN,
    ),
    DownstreamSpec(
        name="text-to-image",
        summary="VQ-Diffusion discrete diffusion over codes conditioned on text (mask-and-replace, guidance)",
        config_cls=TextToImageConfig,
        factory="lgvq_tasks.generation.diffusion_model:build_text_to_image",
        default_train=_PRIOR_TRAIN,
    ),
]
