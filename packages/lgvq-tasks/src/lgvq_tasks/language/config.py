"""Options of the language-task models: captioning, VQA and grounding (paper Tables 8, 9, 11; no torch).

The three models share how an image becomes tokens (:class:`VisualTokensConfig`) and, for captioning and
VQA, the language model (:class:`LanguageModelConfig`): a small decoder trained from scratch over a
word vocabulary of the training text (the default, offline anywhere) or a local ``transformers``
causal-LM checkpoint given by path.
"""

from __future__ import annotations

from typing import Literal

import attrs

from lgvq_core.api import in_range, non_negative, option, positive, probability


def _divides_width(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if instance.width % value:
        raise ValueError(f"must divide width {instance.width}, got {value!r}")


def _thresholds(instance: object, attribute: attrs.Attribute, value: list[float]) -> None:
    if not value or any(not 0.0 <= t <= 1.0 for t in value):
        raise ValueError(f"must be a non-empty list of thresholds in [0, 1], got {value!r}")


@attrs.define
class VisualTokensConfig:
    """How a grid of code indices becomes a sequence of vectors the task model reads."""

    embedding: Literal["codebook", "learned"] = option(
        "codebook",
        "codebook: the tokenizer's frozen code vectors codebook[codes] (never trained here), so the task sees "
        "what differs between a baseline and an LG codebook; learned: a fresh trainable embedding per code "
        "index (the codebook's vectors are then ignored, only the index pattern counts).",
    )
    position: Literal["learned-2d", "none"] = option(
        "learned-2d",
        "learned-2d: a trainable row embedding plus a trainable column embedding added to each token; "
        "none: no position information (an ablation).",
    )
    position_init_std: float | None = option(
        None,
        "Standard deviation of the initial row and column embeddings. Unset: twice the code vectors' (their "
        "standard deviation over the codebook), so that where a code stands is visible from the start; 0.02 "
        "(GPT's usual value) leaves positions almost invisible beside code vectors of unit scale, and VQA and "
        "grounding then learn location slowly (on shapes, VQA location questions stayed at chance).",
        [positive],
    )


@attrs.define
class LanguageModelConfig:
    """The causal language model of captioning and VQA."""

    kind: Literal["scratch", "transformers"] = option(
        "scratch",
        "scratch: a small pre-norm transformer decoder trained from scratch with a word-level vocabulary "
        "built from the training text; transformers: a local causal-LM checkpoint (see `path`).",
    )
    path: str | None = option(
        None,
        "Folder of a `transformers` causal-LM checkpoint and its tokenizer (save_pretrained layout), "
        "read offline; required when kind is transformers.",
    )
    width: int = option(256, "Model width of the scratch decoder.", positive)
    layers: int = option(4, "Blocks of the scratch decoder.", positive)
    heads: int = option(4, "Attention heads of the scratch decoder (must divide width).", [positive, _divides_width])
    dropout: float = option(0.1, "Dropout of the scratch decoder (residual and attention).", probability)
    max_text_length: int = option(
        32, "Longest caption or question in word tokens, EOS included; longer text is truncated.", positive
    )
    min_word_count: int = option(
        1, "A word enters the scratch vocabulary when it occurs at least this often in the training text.", positive
    )

    def __attrs_post_init__(self) -> None:
        if self.kind == "transformers" and not self.path:
            raise ValueError("language_model.path is required when kind = 'transformers' (a local checkpoint)")


@attrs.define
class PrefixLanguageModelConfig:
    """Visual tokens mapped to a prefix that a causal LM reads first (shared by captioning and VQA)."""

    visual: VisualTokensConfig = option(factory=VisualTokensConfig, doc="How codes become visual tokens.")
    language_model: LanguageModelConfig = option(factory=LanguageModelConfig, doc="The causal LM.")
    prefix_mapper: Literal["mlp", "transformer"] = option(
        "mlp",
        "How visual tokens become the LM prefix: mlp (per token, D -> 2W -> W, one prefix token per code) or "
        "transformer (ClipCap's mapping network: learned prefix queries read the visual tokens through a small "
        "encoder).",
    )
    prefix_length: int = option(10, "Prefix tokens of the transformer mapper.", positive)
    mapper_layers: int = option(2, "Encoder blocks of the transformer mapper.", positive)


@attrs.define
class CaptioningConfig(PrefixLanguageModelConfig):
    """ClipCap-style captioning: the prefix conditions a causal LM trained with CE on caption tokens only."""

    decoding: Literal["greedy", "beam"] = option("beam", "How evaluation captions are decoded.")
    beam_size: int = option(5, "Beams of beam-search decoding.", in_range(1, 64))
    length_penalty: float = option(
        1.0, "Beam hypotheses are ranked by sum log p / length ** length_penalty (0: raw sum).", non_negative
    )


@attrs.define
class VQAConfig(PrefixLanguageModelConfig):
    """VQA as classification: [prefix; question] -> decoder -> last real state -> answer logits."""

    init_from: str | None = option(
        None,
        "A captioning checkpoint (torch file with the model state dict, or a dict holding it under 'model') "
        "whose mapper and decoder initialise this model (the paper: the captioning model's last hidden state "
        "feeds the answer classifier). Its options (mapper, LM) must match this config's.",
    )
    max_answers: int = option(
        1000, "Answer classes: the most frequent training answers; others are ignored by the loss.", positive
    )
    wups_thresholds: list[float] = option(
        factory=lambda: [0.9, 0.0],
        doc="WUPS is reported at each threshold (Malinowski & Fritz: 0.9 and 0.0).",
        validator=_thresholds,
    )

    def unit(self) -> str:
        """One training item per question."""
        return "question"

    def annotations(self) -> frozenset[str]:
        return frozenset({"questions"})


@attrs.define
class GroundingConfig:
    """TransVG-style grounding: [REG; text states; visual tokens] -> encoder -> box of the [REG] token."""

    visual: VisualTokensConfig = option(factory=VisualTokensConfig, doc="How codes become visual tokens.")
    width: int = option(256, "Width of the fusion encoder.", positive)
    layers: int = option(6, "Blocks of the fusion encoder (TransVG: 6).", positive)
    heads: int = option(8, "Attention heads of the fusion encoder (must divide width).", [positive, _divides_width])
    dropout: float = option(0.1, "Dropout of the fusion encoder.", probability)
    max_text_tokens: int = option(
        77, "Longest text-state sequence L the fusion encoder accepts (its learned text positions).", positive
    )
    l1_weight: float = option(
        1.0, "Weight of the L1 box loss (summed over cx cy w h, averaged over boxes, as TransVG's code).", non_negative
    )
    giou_weight: float = option(1.0, "Weight of the GIoU loss 1 - GIoU (TransVG's code: 1).", non_negative)
    iou_threshold: float = option(0.5, "A prediction counts as correct at IoU >= this (Acc@0.5).", probability)
    picture_samples: int = option(8, "Samples drawn in grounding.png (0: none).", in_range(0, 64))

    def uses_text(self) -> bool:
        """The model reads the frozen text encoder's states of the referring expression."""
        return True

    def unit(self) -> str:
        """One training item per referring expression."""
        return "referring"

    def annotations(self) -> frozenset[str]:
        return frozenset({"referring"})


@attrs.define
class LanguageScoresConfig:
    """Scores of a language downstream model on the validation split (grounding-scores' options)."""

    batch_size: int = option(32, "Items per batch.", positive)
    shuffled_control: bool = option(
        True,
        "Also score every item with the codes of another image of the split (one random cycle through the "
        "images, so no question, caption or expression meets its own image): does the model use the image at all?",
    )
    seed: int = option(0, "Seed of the shuffled control.")


@attrs.define
class CaptionScoresConfig(LanguageScoresConfig):
    """caption-scores: the options every language score has, and METEOR."""

    meteor: bool = option(True, "METEOR too, where Java is installed (reported absent otherwise).")


@attrs.define
class VQAScoresConfig(LanguageScoresConfig):
    """vqa-scores: the options every language score has, and the question-only baseline."""

    question_only: bool = option(
        True,
        "Also score two blind baselines: the most frequent training answer to the same question (of its type for a "
        "question never seen; question_only) and of the question type alone (answer_prior). What a model scores "
        "without reading the image.",
    )

    def machine_warnings(self) -> list[str]:
        """``lgvq check``: WUPS needs WordNet on this machine (accuracy does not)."""
        from lgvq_core.api import WordNetUnavailable, prepare_wordnet

        try:
            prepare_wordnet()
        except WordNetUnavailable as exc:
            return [f"WUPS will be reported unavailable: {exc}"]
        return []
