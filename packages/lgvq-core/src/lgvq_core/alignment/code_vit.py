"""The code ViT shared by the alignment losses (paper Eq. 4; docs/method.md: Code ViT).

It reads the straight-through codes ``quant`` as a sequence of N tokens of width D, prepends a
learned global token and returns all N+1 tokens projected to the text width W. Its blocks are
CLIP's residual attention blocks, initialised as CLIP's ViT. Officially the blocks are D wide; a
``width`` maps the codes to another width first (a speed lever for small tokenizers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); MLP D -> 4D -> D, no attention mask."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self_attention(self.attn, self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """``attn(x, x, x, need_weights=False)[0]`` (no mask, no dropout), called on its parts.

    The same function up to float rounding: the in-projection, ``scaled_dot_product_attention`` and
    the out-projection, without the module's own dispatch, which costs more than the arithmetic on
    the short sequences of a small code grid.
    """
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # b n 3w
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # each b h n (w/h)
    out = F.scaled_dot_product_attention(q, k, v)  # b h n (w/h)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class CodeViT(nn.Module):
    """``quant`` (B×D×h×w) -> tokens B×(N+1)×W, global token first.

    :param code_dim: D, the channels of ``quant``.
    :param latent_size: the latent grid (h, w); the learned positions are (h*w + 1)×width.
    :param text_width: W, the width of the text encoder's token states (``proj`` is width×W).
    :param sentence_dim: E, the width of the text encoder's sentence embedding. When it differs
        from W, the global token gets its own Linear(W -> E) (see :meth:`global_embedding`).
    :param width: the width of the transformer. ``None`` (official): D, and the codes enter the
        blocks as they are. Otherwise a bias-free Linear(D -> width) maps each code first.
    """

    def __init__(
        self,
        code_dim: int,
        latent_size: tuple[int, int],
        text_width: int,
        sentence_dim: int | None = None,
        layers: int = 2,
        heads: int = 1,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if width is None and code_dim % heads:
            raise ValueError(f"[code_vit] heads = {heads} must divide the code dim D = {code_dim}")
        if width is not None and (width < 1 or width % heads):
            raise ValueError(f"[code_vit] heads = {heads} must divide [code_vit] width = {width}")
        height, grid_width = (int(s) for s in latent_size)
        self.code_dim = code_dim
        self.width = code_dim if width is None else width
        self.latent_size = (height, grid_width)
        self.text_width = text_width
        self.sentence_dim = text_width if sentence_dim is None else sentence_dim
        self.layers = layers

        self.input_proj = nn.Linear(code_dim, width, bias=False) if width is not None else None
        self.class_embedding = nn.Parameter(torch.empty(self.width))
        self.positional_embedding = nn.Parameter(torch.empty(height * grid_width + 1, self.width))
        self.ln_pre = nn.LayerNorm(self.width)
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(self.width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(self.width)
        self.proj = nn.Parameter(torch.empty(self.width, text_width))
        self.global_proj = nn.Linear(text_width, self.sentence_dim) if self.sentence_dim != text_width else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CLIP ViT initialisation (docs/method.md: Code ViT, initialisation), at the blocks' width."""
        nn.init.normal_(self.class_embedding, std=0.01)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.proj, std=0.01)
        if self.input_proj is not None:  # keeps the codes' scale: std D^-1/2
            nn.init.normal_(self.input_proj.weight, std=self.code_dim**-0.5)
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, quant: torch.Tensor) -> torch.Tensor:
        features = self.features(quant)
        return features @ self.proj.to(features.dtype)  # b (1+n) width -> b (1+n) w

    def features(self, quant: torch.Tensor) -> torch.Tensor:
        """B×(N+1)×width tokens after ``ln_post``, before ``proj``: :meth:`forward` is ``features @ proj``."""
        batch, channels, height, width = quant.shape
        if channels != self.code_dim or (height, width) != self.latent_size:
            raise ValueError(
                f"the code ViT was built for codes of {self.code_dim} channels on a "
                f"{self.latent_size[0]}x{self.latent_size[1]} grid, got {channels} channels on {height}x{width}; "
                "the image size or the backbone's downsampling differs from the one the run was built for"
            )
        tokens = quant.flatten(2).transpose(1, 2)  # b d h w -> b (h w) d
        if self.input_proj is not None:
            tokens = self.input_proj(tokens)  # b n d -> b n width
        cls = self.class_embedding.to(tokens.dtype).expand(batch, 1, self.width)
        x = torch.cat([cls, tokens], dim=1) + self.positional_embedding.to(tokens.dtype)  # b (1+n) width
        x = self.resblocks(self.ln_pre(x))
        return self.ln_post(x)

    def global_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """B×E image embedding from the global token of :meth:`forward`'s output (compared with ``sentence``)."""
        global_token = tokens[:, 0]
        return global_token if self.global_proj is None else self.global_proj(global_token)
