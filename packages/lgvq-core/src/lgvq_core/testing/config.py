"""Config classes of the test doubles (no torch)."""

from __future__ import annotations

import attrs

from lgvq_core.config.fields import non_negative, option, positive
from lgvq_core.text_encoder_config import TextEncoderConfig


@attrs.define
class TinyAutoencoderConfig:
    """A two-stage conv autoencoder: fast enough for runner tests on CPU."""

    hidden: int = option(16, "Channels of the hidden convolutions.", positive)
    downsample: int = option(4, "Downsampling factor (a power of 2).", positive)
    adversarial: bool = option(False, "Add a tiny patch discriminator with a hinge loss.")
    disc_start: int = option(0, "First generator step with the adversarial term.", non_negative)
    disc_weight: float = option(0.1, "Weight of the adversarial term.", non_negative)


@attrs.define
class TinyTextConfig(TextEncoderConfig):
    """A deterministic hashed-word encoder with random frozen weights: no files, no downloads."""

    width: int = option(32, "Token-state width W (and sentence width E).", positive)
    vocab_size: int = option(1024, "Vocabulary size V (words are hashed into it).", positive)
    causal: bool = option(False, "Causal attention (like CLIP) instead of bidirectional (like MiniLM).")
    seed: int = option(0, "Seed of the frozen random weights.")


@attrs.define
class TinyPriorConfig:
    """A next-code model (embedding, dropout, one linear layer): a downstream model for runner tests."""

    width: int = option(16, "Embedding width.", positive)
    dropout: float = option(0.1, "Dropout on the embeddings (exercises the restored RNG).", non_negative)
    text: bool = option(False, "Condition on the mean text-encoder state (exercises text inputs).")
    codebook_size: int | None = option(None, "Vocabulary; must equal the tokenizer's codebook when given.", positive)

    def uses_text(self) -> bool:
        return self.text
