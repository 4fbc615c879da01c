"""Run-file options of the three LG-VQ alignment losses (no torch).

docs/method.md: Global semantic alignment, Masked text prediction, Relationship alignment.

Every default is the official code's behaviour; the ``paper`` and improved variants are options.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import attrs

from lgvq_core.alignment.base_config import AlignmentLossConfig
from lgvq_core.config.fields import non_negative, option, positive, probability
from lgvq_core.config.problems import Problem

# ------------------------------------------------------------------------------------------
# semantic-nce
# ------------------------------------------------------------------------------------------


@attrs.define
class SemanticNCEConfig(AlignmentLossConfig):
    """Global semantic alignment: InfoNCE between the code ViT's global token and the sentence."""

    temperature: float = option(
        1.0,
        "Softmax temperature tau (official: 1.0, fixed). With learn_temperature it is the initial value (CLIP: 0.07).",
        positive,
    )
    learn_temperature: bool = option(
        False, "Learn tau as a CLIP logit scale log(1/tau), with the scale 1/tau clamped at 100."
    )
    direction: Literal["image-to-text", "symmetric"] = option(
        "image-to-text",
        "image-to-text: each image picks its caption among the batch's captions (official); "
        "symmetric: also each caption picks its image, and the two losses are averaged.",
    )
    denominator_eps: float = option(
        1e-6,
        "Constant added to the softmax denominator, -log(exp(s_ii) / (sum_j exp(s_ij) + eps)) "
        "(official: 1e-6; 0 gives a plain log-softmax).",
        non_negative,
    )
    negatives: Literal["local", "gathered"] = option(
        "local",
        "local: negatives are the captions of this process's batch (official); gathered: all-gather "
        "features across DDP processes (gradient flows to the local part only).",
    )
    duplicate_captions: Literal["ignore", "mask"] = option(
        "ignore",
        "ignore: an identical caption of another image counts as a negative (official); mask: captions "
        "with the same token ids as the positive are left out of the denominator.",
    )

    def cross_check(self, run: Any, path: str) -> Iterable[Problem]:
        batch_size = run.train.batch_size
        if batch_size < 2 and self.negatives == "local":
            yield Problem(
                "$.train.batch_size",
                f"{path} (semantic-nce) contrasts each image with the other captions of its batch and needs "
                f'batch_size >= 2, got {batch_size}; raise it or set {path}.negatives = "gathered" '
                "with several processes",
            )
        elif batch_size < 2:
            yield Problem(
                "$.train.batch_size",
                f"batch_size {batch_size}: {path} (semantic-nce) has negatives only when several processes "
                "run (torchrun)",
                warning=True,
            )


# ------------------------------------------------------------------------------------------
# masked-text
# ------------------------------------------------------------------------------------------


def _not_below_min(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < instance.min:
        raise ValueError(f"must be >= min ({instance.min}), got {value!r}")


@attrs.define
class MaskRatioConfig:
    """Truncated normal the mask ratio X is drawn from: N(mean, std) restricted to [min, max].

    The official numbers put the mean above the upper bound, so X piles up near ``max``
    (mean about 0.263, 10-90 % range about 0.217-0.296).
    """

    mean: float = option(0.5, "Mean of the normal before truncation.")
    std: float = option(0.1, "Standard deviation of the normal before truncation.", positive)
    min: float = option(0.1, "Lower bound of the mask ratio.", probability)
    max: float = option(0.3, "Upper bound of the mask ratio.", [probability, _not_below_min])


def _heads_divide(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value > 0 and value % instance.decoder_heads:
        divisors = [d for d in range(1, min(value, 64) + 1) if value % d == 0]
        raise ValueError(
            f"decoder_heads = {instance.decoder_heads} does not divide decoder_width = {value}; "
            f"use heads among {divisors} or another width"
        )


#: Text-input values and what each lets the decoder see (``lgvq schema`` shows the option doc).
TEXT_INPUTS = ("unmasked-contextual", "masked-contextual", "token-embedding")


@attrs.define
class MaskedTextConfig(AlignmentLossConfig):
    """Masked text prediction: a decoder reads the caption with masked words and the code ViT tokens.

    The official input leaks the answer: the visible rows are contextual features of the *unmasked*
    caption, so with a causal encoder (CLIP) every later token and EOT have attended to the masked
    word, and with a bidirectional one (MiniLM) every token has. Use ``masked-contextual`` or
    ``token-embedding`` for a leak-free objective.
    """

    text_input: Literal["unmasked-contextual", "masked-contextual", "token-embedding"] = option(
        "unmasked-contextual",
        "Decoder input rows of visible tokens. unmasked-contextual: cached features of the full caption "
        "(official and paper; LEAKS the masked words through context, see the class doc); masked-contextual: "
        "re-encode the caption with masked tokens replaced by the encoder's mask placeholder (one frozen "
        "text pass per step); token-embedding: embedding-layer output, no context.",
    )
    decoder: Literal["fused", "two-stage"] = option(
        "fused",
        "fused: each layer is self-attention -> cross-attention -> FFN (official); two-stage: a self-attention "
        "stack over the text, then a cross-attention stack to the code ViT tokens (the paper's description).",
    )
    attend_padding: bool = option(
        True,
        "Decoder self-attention over all L rows, padding rows included, with no key mask (official: its "
        "pad x pad^T mask collapses to a token count and masks nothing, so padding rows, which pick up image "
        "information through cross-attention, feed the real tokens). false: padding keys are masked and "
        "trailing all-padding columns are dropped (padding then changes nothing).",
    )
    factored_cross_attention: bool = option(
        False,
        "Run the cross-attention at the code ViT's width: its proj is folded into W_k and W_v, so keys and "
        "values are never formed at the text width W. The same function in another order (equal up to float "
        "rounding; false, the official order, projects the codes to W first). A speed lever when the code ViT "
        "is narrower than W and the latent grid is large.",
    )
    decoder_layers: int = option(2, "Layers of the decoder (of each stack with two-stage).", positive)
    decoder_heads: int = option(
        1, "Attention heads of the decoder (must divide the text width W, or decoder_width when it is set).", positive
    )
    decoder_width: int | None = option(
        None,
        "Width d of the decoder. Unset (official): the text width W. Set: a Linear W->d maps the text rows in, the "
        "mask embeddings are L x d, keys and values come from the code ViT tokens through Linear W->d (or its "
        "features, with factored_cross_attention), and the head's first Linear maps d->W, so the logits are "
        "scored against the same token embeddings. A small-scale speed lever: the decoder runs over B x L rows.",
        [positive, _heads_divide],
    )
    dropout: float = option(
        0.1, "Dropout of the decoder (before each residual LayerNorm and inside the FFN).", probability
    )
    mask_ratio: MaskRatioConfig = option(
        factory=MaskRatioConfig,
        doc="Truncated normal N(mean, std) on [min, max] of the mask ratio; official "
        "{mean = 0.5, std = 0.1, min = 0.1, max = 0.3} (the ratio averages about 0.263).",
    )
    mask_ratio_per: Literal["batch", "sample"] = option(
        "batch", "Draw one mask ratio per batch (official) or one per caption."
    )
    mask_unit: Literal["token", "word"] = option(
        "token",
        "Mask sub-word tokens independently (official) or whole words (all pieces of a word together).",
    )
    min_masked: int = option(
        0,
        "Mask at least this many units (tokens or words) per caption when it has them (official: 0, so a "
        "short caption can get none and contributes no loss).",
        non_negative,
    )
    label_smoothing: float = option(
        0.1, "Label smoothing eps of the cross-entropy (official 0.1; paper Eq. 6: 0).", [probability]
    )
    vocabulary: Literal["full", "captions"] = option(
        "full",
        "Tokens the vocabulary head scores. full: all V tokens of the text encoder (official). captions: only "
        "the word tokens that occur in the tokenized training captions (sorted ids, kept in the checkpoint); "
        "targets are word tokens of training captions, so none is lost, but the softmax and the label-smoothing "
        "mean run over that subset. A small-scale speed lever: with a short caption vocabulary the V-wide head "
        "is most of the loss's cost.",
    )

    def cross_check(self, run: Any, path: str) -> Iterable[Problem]:
        encoder = run.text_encoder.config if run.text_encoder is not None else None
        causal = getattr(encoder, "causal", None)
        if causal is not None:
            message = self.leak_message(bool(causal))
            if message is not None:
                yield Problem(f"{path}.text_input", message, warning=True)

    def leak_message(self, causal: bool) -> str | None:
        """Why ``text_input`` lets the decoder read the masked words, or ``None`` when it does not."""
        if self.text_input != "unmasked-contextual":
            return None
        if causal:
            seen = "every visible token after a masked one, and the end token, attended to it"
        else:
            seen = "the encoder is bidirectional, so every visible token attended to the masked words"
        return (
            f'text_input = "unmasked-contextual" (official) feeds features of the unmasked caption: {seen}. '
            'The target is largely recoverable from text alone; use "masked-contextual" or "token-embedding" '
            "for a leak-free objective."
        )

    def leak_warning(self, encoder: Any) -> str | None:
        """The leak warning for a built text encoder (reads its ``causal`` attribute), or ``None``."""
        return self.leak_message(bool(getattr(encoder, "causal", False)))


# ------------------------------------------------------------------------------------------
# relation
# ------------------------------------------------------------------------------------------


@attrs.define
class RelationConfig(AlignmentLossConfig):
    """Relationship alignment: cosine relations of matched codes follow the relations of the words."""

    word_features: Literal["contextual", "token-embedding"] = option(
        "contextual",
        "Word vectors: the encoder's contextual token states (official) or its token-embedding layer (paper).",
    )
    code_source: Literal["straight-through", "codebook"] = option(
        "straight-through",
        "Code vector at the matched position: the straight-through code from quant, so the encoder gets the "
        "gradient (official); or the codebook entry of that position's index, so the codebook does (paper).",
    )
    code_projection: Literal["linear-gelu-ln", "none"] = option(
        "linear-gelu-ln",
        "Map codes to the text width: Linear(D->W) -> GELU -> LayerNorm (official), or none (paper; needs D = W).",
    )
    projection_width: int | None = option(
        None,
        "Output width of the code projection g (linear-gelu-ln). Unset (official): the text width W. The loss "
        "compares the codes' cosine matrix with the words', which needs no common width, so a narrower g gives "
        "the same kind of target at a fraction of the cost (a small-scale speed lever).",
        positive,
    )
    scale_by_match: bool = option(
        True,
        "Multiply each matched code by its word-code cosine before normalising (official; only flips the sign "
        "of codes matched with a negative cosine).",
    )
    pairs: Literal["all-non-pad", "words", "words-offdiag"] = option(
        "all-non-pad",
        "Token pairs compared: all non-padding tokens with specials and the diagonal (official), word tokens "
        "only (paper), or word tokens without the diagonal.",
    )
    reduction: Literal["mean-all", "mean-valid"] = option(
        "mean-all",
        "Average the squared errors over all B*L*L entries, excluded pairs counting as zeros (official), or "
        "over the compared pairs only.",
    )
