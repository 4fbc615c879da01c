"""Config classes of the built-in quantizers (no torch).

Every quantizer table names its codebook explicitly (``codebook_size`` K, ``dim`` D): a backbone
takes its code width from the quantizer, never the other way round.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from lgvq_core.config.fields import non_negative, option, positive

BetaPlacement = Literal["commitment", "codebook"]

_BETA_PLACEMENT_DOC = (
    'Which term beta scales. "commitment" (paper Eq. 2, sonnet, CVQ): ||z_q - sg(z)||^2 + beta ||sg(z_q) - z||^2. '
    '"codebook" (taming legacy=True, the official LG-VQ VQ-GAN): ||sg(z_q) - z||^2 + beta ||z_q - sg(z)||^2.'
)


def _decay(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {value!r}")


@attrs.define
class VQConfig:
    """Nearest-code vector quantizer with a learned codebook (van den Oord et al. 2017)."""

    codebook_size: int = option(1024, "Number of codes K.", positive)
    dim: int = option(256, "Code width D; the backbone's quant_conv projects to it.", positive)
    beta: float = option(0.25, "Weight beta of the down-weighted loss term (see beta_placement).", non_negative)
    beta_placement: BetaPlacement = option("commitment", _BETA_PLACEMENT_DOC)


@attrs.define
class EMAVQConfig:
    """Nearest-code quantizer whose codebook follows exponential moving averages (sonnet's VQ-VAE)."""

    codebook_size: int = option(1024, "Number of codes K.", positive)
    dim: int = option(256, "Code width D; the backbone's quant_conv projects to it.", positive)
    beta: float = option(
        0.25, "Commitment weight: the loss is beta ||sg(z_q) - z||^2 (the codebook has no loss).", non_negative
    )
    decay: float = option(0.99, "EMA decay of the code counts and code sums, in [0, 1).", _decay)
    epsilon: float = option(1e-5, "Laplace smoothing of the code counts: N_k <- (N_k + eps) / (n + K eps) n.", positive)
    dead_code_threshold: float = option(
        0.0,
        "Restart codes whose EMA count falls below this with random latents of the batch; 0 turns restarts off.",
        non_negative,
    )


@attrs.define
class CosineVQConfig:
    """Nearest code by cosine similarity: inputs and codes are l2-normalised before lookup and loss."""

    codebook_size: int = option(1024, "Number of codes K.", positive)
    dim: int = option(256, "Code width D; the backbone's quant_conv projects to it.", positive)
    beta: float = option(0.25, "Weight beta of the down-weighted loss term (see beta_placement).", non_negative)
    beta_placement: BetaPlacement = option("commitment", _BETA_PLACEMENT_DOC)
