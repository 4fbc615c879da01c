"""Config classes of the built-in callbacks (no torch)."""

from __future__ import annotations

import attrs

from lgvq_core.config.fields import non_negative, option, positive


@attrs.define
class EarlyStoppingConfig:
    """Stop when a validation metric has not improved for ``patience`` validations."""

    metric: str = option("rec_loss", "Validation metric to watch (lower is better).")
    patience: int = option(5, "Validations without improvement before stopping.", positive)
    min_delta: float = option(0.0, "Smallest decrease that counts as an improvement.", non_negative)


@attrs.define
class GradNormConfig:
    """Log the gradient norm of the generator (and discriminator) parameters every logged step."""

    norm_type: float = option(2.0, "Order of the norm.", positive)
