"""Which caption tokens the masked-text loss hides (docs/method.md: Masked text prediction, masking)."""

from __future__ import annotations

import torch

from lgvq_core.alignment.loss_configs import MaskRatioConfig


def sample_mask_ratio(
    ratio: MaskRatioConfig, count: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """``count`` draws from N(mean, std) truncated to [min, max], by inverting the normal CDF.

    Draws use torch's RNG (or ``generator``), so a seeded run repeats its masks.
    """
    mean, std = float(ratio.mean), float(ratio.std)
    low = torch.tensor((ratio.min - mean) / std, dtype=torch.float64)
    high = torch.tensor((ratio.max - mean) / std, dtype=torch.float64)
    cdf_low, cdf_high = torch.special.ndtr(low), torch.special.ndtr(high)
    uniform = torch.rand(count, dtype=torch.float64, generator=generator)
    standard = torch.special.ndtri(cdf_low + uniform * (cdf_high - cdf_low))
    values = (mean + std * standard).clamp(ratio.min, ratio.max)
    return values.to(device=device, dtype=torch.float32)


def select_masked(
    word_mask: torch.Tensor,
    ratio: torch.Tensor,
    unit_ids: torch.Tensor | None = None,
    min_masked: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """B×L bool: tokens to mask. Each unit is masked independently with probability ``ratio``.

    ``word_mask`` B×L marks maskable tokens (never specials or padding). ``ratio`` is a scalar or
    one value per caption (B). ``unit_ids`` B×L gives the unit of each token (its word, in
    ``[0, L)``, -1 for specials); ``None`` makes every token its own unit. Afterwards, captions with
    fewer than ``min_masked`` masked units get more, chosen at random among their unmasked units.
    """
    batch, length = word_mask.shape
    device = word_mask.device
    positions = torch.arange(length, device=device).expand(batch, length)
    if unit_ids is None:
        unit_ids = positions
    elif int(unit_ids.max()) >= length:
        raise ValueError(f"unit ids must lie in [0, {length}) (one per token at most), got {int(unit_ids.max())}")
    unit_ids = torch.where(word_mask, unit_ids.to(device).long(), torch.full_like(positions, -1))

    # b u: which units exist (have at least one maskable token)
    has_unit = torch.zeros(batch, length + 1, dtype=torch.bool, device=device)
    has_unit.scatter_(1, unit_ids + 1, True)
    has_unit = has_unit[:, 1:]

    ratio = torch.as_tensor(ratio, dtype=torch.float32, device=device).reshape(-1, 1)
    draws = _uniform(batch, length, device, generator)
    unit_masked = (draws < ratio) & has_unit  # b u

    if min_masked > 0:
        deficit = (min_masked - unit_masked.sum(1, keepdim=True)).clamp_min(0)  # b 1
        candidates = has_unit & ~unit_masked
        scores = torch.where(candidates, _uniform(batch, length, device, generator), -1.0)
        rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # rank of each unit among candidates
        unit_masked |= candidates & (rank < deficit)

    # b l: a token is masked when its unit is
    token_masked = unit_masked.gather(1, unit_ids.clamp_min(0))
    return token_masked & word_mask


def _uniform(batch: int, length: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    # Draw on the generator's device (the default RNG draws directly on ``device``).
    where = generator.device if generator is not None else device
    return torch.rand(batch, length, generator=generator, device=where).to(device)


def last_real_column(pad_mask: torch.Tensor) -> int:
    """1 + the last column that holds a real token in some caption (at least 1)."""
    columns = torch.arange(1, pad_mask.shape[1] + 1, device=pad_mask.device)
    return max(1, int((pad_mask.bool().any(0) * columns).max()))
