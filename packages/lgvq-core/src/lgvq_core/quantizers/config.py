"""Config classes of the built-in quantizers (no torch).

Every quantizer table names its codebook explicitly (``codebook_size`` K, ``dim`` D): a backbone
takes its code width from the quantizer, never the other way round.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from lgvq_core.config.fields import non_negative, option, positive

BetaPlacement = Literal["commitment", "codebook"]
CodebookInit = Literal["uniform", "kmeans"]

_BETA_PLACEMENT_DOC = (
    'Which term beta scales. "commitment" (paper Eq. 2, sonnet, CVQ): ||z_q - sg(z)||^2 + beta ||sg(z_q) - z||^2. '
    '"codebook" (taming legacy=True, the official LG-VQ VQ-GAN): ||sg(z_q) - z||^2 + beta ||z_q - sg(z)||^2.'
)


def _decay(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {value!r}")


# The small-scale levers against codebook collapse, shared by the tables below. Their defaults are
# the official method's behaviour; docs/method.md: Quantizers and β placement.
def _lookup_dim(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and not 1 <= value <= instance.dim:
        raise ValueError(
            f"must be in [1, dim] = [1, {instance.dim}] when set (a factorised lookup is no wider than the code "
            f"width), got {value!r}"
        )


def _init() -> Any:
    return option(
        "uniform",
        'Codebook initialisation. "uniform": U(-1/K, 1/K) at construction (the official method). "kmeans": '
        "set once, from the latents of the first training batch, by kmeans_iters Lloyd iterations (in the lookup "
        "space); a resumed or reloaded model keeps its codebook.",
    )


def _kmeans_iters() -> Any:
    return option(10, 'Lloyd iterations of init = "kmeans" (each one n x K distance matmul).', positive)


def _dead_code_threshold() -> Any:
    return option(
        0.0,
        "Restart codes whose EMA count (positions per batch, summed over ranks; see usage_decay) falls below "
        "this onto random latents of the batch, their count reset to the threshold; 0 turns restarts off.",
        non_negative,
    )


def _usage_decay() -> Any:
    return option(
        0.99,
        "EMA decay of the per-code counts that dead_code_threshold reads (zero-debiased, so the first step "
        "reads the batch counts), in [0, 1).",
        _decay,
    )


def _lookup_dim_option() -> Any:
    return option(
        None,
        "Factorised codes (ViT-VQGAN): a learned 1x1 projection D -> lookup_dim before the lookup, a "
        "codebook of K x lookup_dim codes, and a second projection back to D after the straight-through "
        "estimator. In [1, dim]; unset: no projection.",
        _lookup_dim,
    )


@attrs.define
class VQConfig:
    """Nearest-code vector quantizer with a learned codebook (van den Oord et al. 2017)."""

    codebook_size: int = option(1024, "Number of codes K.", positive)
    dim: int = option(256, "Code width D; the backbone's quant_conv projects to it.", positive)
    beta: float = option(0.25, "Weight beta of the down-weighted loss term (see beta_placement).", non_negative)
    beta_placement: BetaPlacement = option("commitment", _BETA_PLACEMENT_DOC)
    init: CodebookInit = _init()
    kmeans_iters: int = _kmeans_iters()
    dead_code_threshold: float = _dead_code_threshold()
    usage_decay: float = _usage_decay()
    lookup_dim: int | None = _lookup_dim_option()


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
    init: CodebookInit = _init()
    kmeans_iters: int = _kmeans_iters()


@attrs.define
class CosineVQConfig:
    """Nearest code by cosine similarity: inputs and codes are l2-normalised before lookup and loss."""

    codebook_size: int = option(1024, "Number of codes K.", positive)
    dim: int = option(256, "Code width D; the backbone's quant_conv projects to it.", positive)
    beta: float = option(0.25, "Weight beta of the down-weighted loss term (see beta_placement).", non_negative)
    beta_placement: BetaPlacement = option("commitment", _BETA_PLACEMENT_DOC)
    init: CodebookInit = _init()
    kmeans_iters: int = _kmeans_iters()
    dead_code_threshold: float = _dead_code_threshold()
    usage_decay: float = _usage_decay()
    lookup_dim: int | None = _lookup_dim_option()
