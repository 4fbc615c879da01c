"""VQ-GAN encoder and decoder (taming f16: ch 128, ch_mult [1,1,2,2,4], attention at 16², docs/method.md: VQ-GAN).

Level i works at ``image_size / 2**i``; a level whose side is listed in ``attn_resolutions`` follows
each of its residual blocks with single-head attention. The encoder has ``num_res_blocks`` blocks
per level and halves the size between levels; the decoder has ``num_res_blocks + 1`` and doubles it.
Both have a middle Res-Attn-Res stage at the lowest resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lgvq_backbones.vqgan.blocks import AttnBlock, Downsample, ResnetBlock, Upsample, group_norm, swish


def level_sizes(image_size: int, levels: int) -> list[int]:
    """Side length of each level: image_size, image_size/2, ..."""
    return [image_size // 2**i for i in range(levels)]


class Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention when the level has any."""

    def __init__(self, blocks: list[ResnetBlock], attentions: list[AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attentions)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class Middle(nn.Module):
    """Res -> Attn -> Res at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, dropout, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


def _level(block_in: int, block_out: int, count: int, with_attention: bool, dropout: float, groups: int) -> Level:
    blocks = [ResnetBlock(block_in if i == 0 else block_out, block_out, dropout, groups) for i in range(count)]
    attentions = [AttnBlock(block_out, groups) for _ in range(count)] if with_attention else []
    return Level(blocks, attentions)


class Encoder(nn.Module):
    """images B×C×H×W -> z B×z_channels×(H/f)×(W/f), f = 2^(len(ch_mult)-1)."""

    def __init__(
        self,
        *,
        in_channels: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        z_channels: int,
        image_size: int,
        dropout: float = 0.0,
        groups: int = 32,
    ) -> None:
        super().__init__()
        sizes = level_sizes(image_size, len(ch_mult))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            level = _level(block_in, ch * mult, num_res_blocks, sizes[i] in attn_resolutions, dropout, groups)
            block_in = ch * mult
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = Middle(block_in, dropout, groups)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(images)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """z B×z_channels×h×w -> images B×C×(h·f)×(w·f). ``conv_out.weight`` is the GAN's "last layer"."""

    def __init__(
        self,
        *,
        out_channels: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        z_channels: int,
        image_size: int,
        dropout: float = 0.0,
        groups: int = 32,
    ) -> None:
        super().__init__()
        sizes = level_sizes(image_size, len(ch_mult))
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = Middle(block_in, dropout, groups)
        levels: list[Level] = [None] * len(ch_mult)  # type: ignore[list-item]
        for i in reversed(range(len(ch_mult))):
            level = _level(block_in, ch * ch_mult[i], num_res_blocks + 1, sizes[i] in attn_resolutions, dropout, groups)
            block_in = ch * ch_mult[i]
            if i != 0:
                level.upsample = Upsample(block_in)
            levels[i] = level
        self.up = nn.ModuleList(levels)  # up[0] is the full-resolution level, as in taming
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
