"""Options of the ``example-conv`` backbone (no torch: `lgvq check` reads this without it)."""

from __future__ import annotations

from typing import Literal

import attrs

from lgvq_core.api import in_range, option, positive


@attrs.define
class ExampleConvConfig:
    """A small convolutional autoencoder around the run's quantizer."""

    channels: int = option(64, "Channels of the first stage; each further stage doubles them.", positive)
    stages: int = option(3, "Stride-2 stages: latents are image_size / 2**stages on a side.", in_range(1, 6))
    loss: Literal["mse", "l1"] = option("mse", "Pixel reconstruction loss.")

    @property
    def downsample(self) -> int:
        """How much smaller the latent grid is than the image: `lgvq check` refuses image sizes it does not divide."""
        return 2**self.stages

    @classmethod
    def contract_config(cls) -> ExampleConvConfig:
        """A tiny instance for the plugin contract's build check."""
        return cls(channels=8, stages=2)
