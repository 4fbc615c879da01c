"""Base config of every alignment loss (no torch)."""

from __future__ import annotations

import attrs

from lgvq_core.config.fields import non_negative, option


@attrs.define
class AlignmentLossConfig:
    """Every ``[[alignment]]`` table has a ``weight``; plugins subclass this for their options."""

    weight: float = option(0.1, "Weight of this loss in the generator objective.", non_negative)
