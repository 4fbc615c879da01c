"""PatchGAN discriminator of VQ-GAN (pix2pix's NLayerDiscriminator as taming uses it, docs/method.md: VQ-GAN).

With 3 layers and ndf 64: 4×4 convs 3→64→128→256→512→1 with strides 2, 2, 2, 1, 1, LeakyReLU 0.2,
BatchNorm after every conv but the first and the last (those convs have no bias). It outputs one
logit per overlapping patch. Init: convs N(0, 0.02), BatchNorm weight N(1, 0.02), bias 0.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, layers: int = 3) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            previous, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            modules += [
                nn.Conv2d(ndf * previous, ndf * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        modules.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*modules)
        self.apply(init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×C×H×W -> patch logits B×1×h×w."""
        return self.main(images)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
