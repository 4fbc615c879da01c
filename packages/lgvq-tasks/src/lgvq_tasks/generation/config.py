"""Options of the generative downstream models (no torch).

Defaults are the small shapes a test or a first run can afford; the paper's sizes (App. A.1) are
the classmethods ``paper()``. The learning rate follows taming-transformers' rule, the base rate
times the batch size (:func:`taming_learning_rate`): 4.5e-6 x 36 = 1.62e-4 for the paper's
unconditional prior.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from lgvq_core.api import in_range, option, positive, probability

#: taming-transformers' base learning rate of its transformers (per image in the batch).
TAMING_BASE_LEARNING_RATE = 4.5e-6

#: AdamW betas of taming's Net2NetTransformer (and minGPT).
GPT_ADAM_BETAS = (0.9, 0.95)

#: Batch sizes of the paper's runs (App. A.1): unconditional / completion / text priors, semantic synthesis,
#: text-to-image diffusion.
PAPER_GPT_BATCH = 36
PAPER_SEMANTIC_BATCH = 15
PAPER_DIFFUSION_BATCH = 24

Condition = Literal["unconditional", "completion", "semantic", "text"]


def taming_learning_rate(batch_size: int, accumulate: int = 1, devices: int = 1) -> float:
    """taming's rule: lr = base_lr x images per optimizer step (batch x accumulation x devices)."""
    return TAMING_BASE_LEARNING_RATE * batch_size * accumulate * devices


def _at_most_steps(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and not 1 <= value <= instance.steps:
        raise ValueError(f"must be between 1 and steps (T = {instance.steps}), got {value}")


def _optional_positive(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0 when set, got {value!r}")


@attrs.define
class SamplingConfig:
    """How codes are drawn from a prior's next-token distribution (each filter is independent)."""

    temperature: float = option(1.0, "Divide the logits by this before any filter (< 1: sharper).", positive)
    top_k: int | None = option(None, "Keep only the k most likely codes (unset: all).", _optional_positive)
    top_p: float | None = option(
        None,
        "Nucleus: keep the smallest set of most likely codes whose probability reaches p (unset: all).",
        in_range(1e-9, 1.0),
    )
    guidance_scale: float = option(
        1.0,
        "Classifier-free guidance s (text condition only): logits = u + s (c - u); 1 is the plain conditional "
        "model, 0 the unconditional one.",
    )


@attrs.define
class CodeGPTConfig:
    """``code-gpt``: a decoder-only transformer over raster code sequences (taming's Net2NetTransformer).

    Pre-LN blocks, GELU MLP 4x, learned positions, next-token cross-entropy over the K codes. The
    sequence is ``[condition prefix] [start] z_0 ... z_{N-2}`` and predicts ``z_0 ... z_{N-1}``; the start
    and condition tokens have their own vocabulary range past the K codes (see ``TokenLayout``).
    Paper size (App. A.1): 16 layers, 16 heads, width 1024, block 512, batch 36 (semantic: 15).
    """

    layers: int = option(4, "Transformer blocks (paper: 16).", positive)
    heads: int = option(4, "Attention heads (paper: 16).", positive)
    width: int = option(128, "Embedding width n_embd (paper: 1024).", positive)
    block_size: int | None = option(
        None,
        "Longest input sequence (prefix + start + codes - 1). Unset: exactly what the condition needs "
        "(paper: 512 = 256 condition + 256 codes).",
        _optional_positive,
    )
    dropout: float = option(0.0, "Dropout on embeddings, attention and residual branches (taming: 0).", probability)
    condition: Condition = option(
        "unconditional",
        "unconditional (Table 7); completion (Table 10; trained as unconditional, sampled from the first "
        "completion_fraction of the raster); semantic (Table 6; a segmentation map, see semantic_source); text "
        "(cached text-encoder token states as a projected prefix, classifier-free guidance ready).",
    )
    completion_fraction: float = option(
        0.5, "Fraction of the raster given to completion (taming's protocol: the first half).", in_range(0.0, 1.0)
    )
    semantic_source: Literal["grid", "vq"] = option(
        "grid",
        "grid: mode-pool the label map (batch key 'segmentation', b H W) onto the code grid, one token per "
        "code position (nothing trained); vq: codes of a mask autoencoder trained as a tokenizer run on "
        "[data] type = 'segmentation-maps', named by the run file's [condition_tokenizer] (batch key "
        "'condition_codes', b h w, cached like the image codes).",
    )
    condition_vocab: int | None = option(
        None,
        "semantic: number of label classes (grid; required) or the mask autoencoder's codebook size (vq; unset: "
        "the [condition_tokenizer]'s).",
        _optional_positive,
    )
    condition_length: int | None = option(
        None,
        "semantic vq: condition codes per image (unset: the [condition_tokenizer]'s sequence length).",
        _optional_positive,
    )
    text_width: int | None = option(
        None,
        "text: width W of the cached text token states (unset: the text encoder's; CLIP ViT-B: 512).",
        _optional_positive,
    )
    text_length: int | None = option(
        None,
        "text: longest text (token states per caption; unset: the text encoder's length); shorter captions are "
        "padded and masked.",
        _optional_positive,
    )
    condition_dropout: float = option(
        0.1, "text: probability of replacing a caption by the learned null condition in training.", probability
    )
    sampling: SamplingConfig = option(factory=SamplingConfig, doc="Default sampling options of `lgvq sample`.")

    def uses_text(self) -> bool:
        """A text prior reads the cached text-encoder states of each caption."""
        return self.condition == "text"

    def annotations(self) -> frozenset[str]:
        """Dataset annotations the condition needs (checked by ``lgvq check``): label maps for ``semantic``."""
        return frozenset({"segmentation"}) if self.condition == "semantic" else frozenset()

    def uses_condition_tokenizer(self) -> bool:
        """Semantic ``vq`` reads the codes a ``[condition_tokenizer]`` gives each label map."""
        return self.condition == "semantic" and self.semantic_source == "vq"

    def data_problems(self, data: Any) -> list[tuple[str, str]]:
        """``lgvq check``: semantic ``grid`` needs a token per label class of the dataset's maps."""
        classes = getattr(type(data), "segmentation_classes", None)
        if (
            self.condition != "semantic"
            or self.semantic_source != "grid"
            or self.condition_vocab is None
            or not isinstance(classes, int)
            or self.condition_vocab >= classes
        ):
            return []
        return [
            (
                "$.downstream.condition_vocab",
                f"{self.condition_vocab} condition tokens for label maps of {classes} classes; set it to {classes}",
            )
        ]

    @classmethod
    def paper(cls, **overrides: object) -> CodeGPTConfig:
        """The paper's prior (App. A.1, taming's CelebA-HQ sizes): 16 x 16 heads x 1024, block 512."""
        values: dict[str, object] = {"layers": 16, "heads": 16, "width": 1024, "block_size": 512}
        values.update(overrides)
        return cls(**values)


@attrs.define
class TextToImageConfig:
    """``text-to-image``: VQ-Diffusion over codes, conditioned on cached text token states (Table 5).

    K + 1 classes (the K codes and [MASK]), the mask-and-replace forward process (cumulative
    alpha 0.99999 -> 9e-6, cumulative gamma 9e-6 -> 0.99999, linear over T steps), a transformer that
    predicts x0 (blocks: AdaLN(t) -> self-attention -> cross-attention to the text -> MLP), the
    variational bound with importance-sampled t plus the auxiliary x0 term. Paper size: 19 layers,
    width 1024, 16 heads, batch 24.
    """

    layers: int = option(4, "Transformer blocks (paper: 19).", positive)
    heads: int = option(4, "Attention heads (paper: 16).", positive)
    width: int = option(128, "Transformer width (paper: 1024).", positive)
    dropout: float = option(0.0, "Dropout in attention and MLP.", probability)
    steps: int = option(100, "Diffusion steps T.", positive)
    alpha_cumulative: tuple[float, float] = option(
        (0.99999, 9e-6), "Cumulative probability of keeping a code at t = 1 and t = T (linear in t)."
    )
    gamma_cumulative: tuple[float, float] = option(
        (9e-6, 0.99999), "Cumulative probability of [MASK] at t = 1 and t = T (linear in t)."
    )
    auxiliary_weight: float = option(
        5e-4, "Weight of the auxiliary x0 term KL(x0 || p(x0 | x_t)) (VQ-Diffusion: 5e-4).", in_range(0.0, 1e6)
    )
    adaptive_auxiliary: bool = option(
        True, "Scale the auxiliary term by (1 - t/T) + 1, as VQ-Diffusion does (more weight at small t)."
    )
    importance_sampling: bool = option(
        True,
        "Draw t in proportion to sqrt(E[L_t^2]) once every t has been seen 10 times (uniform before).",
    )
    text_width: int | None = option(
        None,
        "Width W of the cached text token states (unset: the text encoder's; CLIP ViT-B: 512).",
        _optional_positive,
    )
    text_length: int | None = option(
        None, "Longest text (token states per caption; unset: the text encoder's length).", _optional_positive
    )
    condition_dropout: float = option(
        0.1, "Probability of replacing a caption by the learned null text in training.", probability
    )
    truncation: float = option(
        0.86, "Sampling: keep the most likely x0 codes up to this cumulative probability (r).", in_range(1e-9, 1.0)
    )
    guidance_scale: float = option(
        1.0, "Sampling: classifier-free guidance s in log-probability space (1: plain conditional)."
    )
    sample_steps: int | None = option(
        None,
        "Sampling: model evaluations (unset: all T; fewer skip steps evenly, e.g. 25 or 10).",
        _at_most_steps,
    )

    def uses_text(self) -> bool:
        """The diffusion model is always conditioned on the caption's text-encoder states."""
        return True

    @classmethod
    def paper(cls, **overrides: object) -> TextToImageConfig:
        """The paper's text-to-image model (App. A.1, VQ-Diffusion-S-like): 19 layers, width 1024, 16 heads."""
        values: dict[str, object] = {"layers": 19, "heads": 16, "width": 1024}
        values.update(overrides)
        return cls(**values)
