"""Config of the `vqvae` backbone (no torch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from lgvq_backbones.latent_grid import dataset_image_size, is_power_of_two, latent_grid_problems
from lgvq_core.api import Problem, non_negative, option, positive


def _power_of_two_above_one(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 2 or not is_power_of_two(value):
        raise ValueError(f"must be a power of 2 and at least 2 (one stride-2 stage per factor 2), got {value!r}")


def _even(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value % 2:
        raise ValueError(f"must be even (the first stage has hidden/2 channels), got {value!r}")


@attrs.define
class VQVAEConfig:
    """Oord et al. 2017 conv encoder/decoder; [proj] 4 strided stages (f 16), hidden 256, MSE loss."""

    hidden: int = option(256, "Channels of the convolutions; the outermost stage has hidden/2.", [positive, _even])
    residual_hidden: int = option(
        256, "Channels inside each residual block (3×3 conv to this, 1×1 conv back).", positive
    )
    residual_blocks: int = option(2, "Residual blocks in the encoder and in the decoder.", non_negative)
    downsample: int = option(
        16, "Downsampling factor f (a power of 2): one 4×4 stride-2 convolution per factor 2.", _power_of_two_above_one
    )
    data_variance: float = option(
        1.0,
        "The reconstruction MSE is divided by this (sonnet uses the training-set variance); 1.0 is plain MSE.",
        positive,
    )

    def cross_check(self, run: Any, path: str) -> Iterable[Problem]:
        return latent_grid_problems(dataset_image_size(run), self.downsample, f"{path}.downsample", "downsample")
