"""The ``example-conv`` tokenizer: imported only when a run builds it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.api import BuildContext, Quantizer, Tokenizer, TokenizerOutput
from lgvq_example_backbone.config import ExampleConvConfig


class ExampleConv(Tokenizer):
    """Encoder (stride-2 convs) -> the run's quantizer -> decoder (transposed convs)."""

    def __init__(self, config: ExampleConvConfig, quantizer: Quantizer) -> None:
        super().__init__()
        self.config = config
        self.quantizer = quantizer
        self.code_dim = quantizer.dim
        self.downsample = 2**config.stages
        widths = [config.channels * 2**i for i in range(config.stages + 1)]

        down: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            down += [nn.SiLU(), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]  # h -> h/2
        self.encoder = nn.Sequential(*down, nn.SiLU(), nn.Conv2d(widths[-1], self.code_dim, 1))

        up: list[nn.Module] = [nn.Conv2d(self.code_dim, widths[-1], 3, padding=1)]
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            up += [nn.SiLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]  # h -> 2h
        self.decoder = nn.Sequential(*up, nn.SiLU(), nn.Conv2d(widths[0], 3, 3, padding=1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)  # b 3 H W -> b D H/f W/f

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(quant)  # b D h w -> b 3 h*f w*f

    def generator_loss(
        self, images: torch.Tensor, output: TokenizerOutput, step: int, discriminator: nn.Module | None
    ) -> dict[str, torch.Tensor]:
        if self.config.loss == "l1":
            rec = F.l1_loss(output.recon, images)
        else:
            rec = F.mse_loss(output.recon, images)
        return {"rec_loss": rec, "quantizer_loss": output.quantizer_loss, "total": rec + output.quantizer_loss}


def build_example_conv(config: ExampleConvConfig, context: BuildContext) -> ExampleConv:
    """Factory named by the spec: called as ``factory(config, context)``."""
    if context is None or context.quantizer is None:
        raise ValueError("example-conv needs the run's quantizer in context.quantizer ([model.quantizer])")
    return ExampleConv(config, context.quantizer)
