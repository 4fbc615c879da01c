"""The `vqvae` backbone: Oord et al. 2017's convolutional VQ-VAE (docs/method.md: VQ-VAE), laid out like sonnet's.

Encoder: 4×4 stride-2 convs with ReLU (``log2 f`` of them; the first has hidden/2 channels), a
3×3 conv, residual blocks (ReLU, 3×3 conv, ReLU, 1×1 conv, added to the input) and a final ReLU,
then a 1×1 conv to the code width D. The decoder mirrors it with 4×4 stride-2 transposed convs.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_backbones.latent_grid import require_quantizer
from lgvq_backbones.vqvae.config import VQVAEConfig
from lgvq_core.api import BuildContext, ConfigError, Quantizer, Tokenizer, TokenizerOutput


class ResidualBlock(nn.Module):
    """x + conv1×1(ReLU(conv3×3(ReLU(x))))."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv1 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


class ResidualStack(nn.Sequential):
    """Residual blocks followed by a ReLU."""

    def __init__(self, channels: int, hidden: int, blocks: int) -> None:
        super().__init__(*(ResidualBlock(channels, hidden) for _ in range(blocks)), nn.ReLU())


def stage_channels(in_channels: int, hidden: int, stages: int) -> list[int]:
    """Channels along the encoder's strided convs: in -> hidden/2 -> hidden -> ... (one stage: in -> hidden)."""
    if stages == 1:
        return [in_channels, hidden]
    return [in_channels, hidden // 2] + [hidden] * (stages - 1)


class VQVAEEncoder(nn.Module):
    def __init__(
        self, in_channels: int, hidden: int, residual_hidden: int, residual_blocks: int, stages: int, code_dim: int
    ) -> None:
        super().__init__()
        channels = stage_channels(in_channels, hidden, stages)
        strided: list[nn.Module] = []
        for c_in, c_out in pairwise(channels):
            strided += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.strided = nn.Sequential(*strided)  # b c H W -> b hidden H/f W/f
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.residual = ResidualStack(hidden, residual_hidden, residual_blocks)
        self.to_codes = nn.Conv2d(hidden, code_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_codes(self.residual(self.conv(self.strided(images))))


class VQVAEDecoder(nn.Module):
    def __init__(
        self, out_channels: int, hidden: int, residual_hidden: int, residual_blocks: int, stages: int, code_dim: int
    ) -> None:
        super().__init__()
        channels = stage_channels(out_channels, hidden, stages)[::-1]  # hidden ... hidden/2 -> out
        self.conv = nn.Conv2d(code_dim, hidden, 3, padding=1)
        self.residual = ResidualStack(hidden, residual_hidden, residual_blocks)
        strided: list[nn.Module] = []
        for c_in, c_out in pairwise(channels):
            strided += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.strided = nn.Sequential(*strided[:-1])  # no ReLU on the output image

    def forward(self, quant: torch.Tensor) -> torch.Tensor:
        return self.strided(self.residual(self.conv(quant)))


class VQVAE(Tokenizer):
    """Encoder -> quantizer -> decoder trained by MSE / data_variance + the quantizer loss; no GAN."""

    def __init__(self, config: VQVAEConfig, quantizer: Quantizer, in_channels: int = 3) -> None:
        super().__init__()
        stages = config.downsample.bit_length() - 1
        self.config = config
        self.quantizer = quantizer
        self.code_dim = quantizer.dim
        self.downsample = config.downsample
        sizes = (config.hidden, config.residual_hidden, config.residual_blocks, stages, quantizer.dim)
        self.encoder = VQVAEEncoder(in_channels, *sizes)
        self.decoder = VQVAEDecoder(in_channels, *sizes)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(quant)

    def generator_loss(
        self, images: torch.Tensor, output: TokenizerOutput, step: int, discriminator: nn.Module | None
    ) -> dict[str, torch.Tensor]:
        rec_loss = F.mse_loss(output.recon, images) / self.config.data_variance
        return {
            "rec_loss": rec_loss,
            "quantizer_loss": output.quantizer_loss,
            "total": rec_loss + output.quantizer_loss,
        }


def build_vqvae(config: VQVAEConfig, context: BuildContext) -> VQVAE:
    quantizer = require_quantizer(context, "vqvae")
    image_size = context.image_size
    if image_size is not None and image_size % config.downsample:
        raise ConfigError(
            [f"$.model.backbone.downsample: {config.downsample} does not divide the image size {image_size}"]
        )
    return VQVAE(config, quantizer, in_channels=context.in_channels)
