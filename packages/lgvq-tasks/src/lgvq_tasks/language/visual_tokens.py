"""Visual tokens: an image's cached code indices as vectors a language-task model can read.

Default: the tokenizer's frozen codebook vectors ``codebook[codes]`` (a buffer, never trained) plus a
learned 2D position embedding (one row and one column vector, summed), initialised at twice the
code vectors' scale so that a token's place is visible from the first step. The codebook is what a
language-guided tokenizer changes, so a task that reads code vectors measures it; a task that learned
its own embedding per index would only see which codes co-occur. ``embedding = "learned"`` is that
ablation: a trainable table of ``K`` vectors (initialised from the codebook's scale, not its values).
"""

from __future__ import annotations

import torch
from torch import nn

from lgvq_core.api import FrozenTokenizer

from .config import VisualTokensConfig


class VisualTokens(nn.Module):
    """``codes`` (b h w, or b k h w) -> tokens (b (h w) D) with D the code dimension (k D for k indices)."""

    def __init__(self, config: VisualTokensConfig, tokenizer: FrozenTokenizer) -> None:
        super().__init__()
        codebook = torch.as_tensor(tokenizer.codebook).detach().float().clone()
        if codebook.shape != (tokenizer.codebook_size, tokenizer.code_dim):
            raise ValueError(
                f"tokenizer.codebook has shape {tuple(codebook.shape)}, expected "
                f"({tokenizer.codebook_size}, {tokenizer.code_dim}) (codebook_size x code_dim)"
            )
        self.grid = tuple(tokenizer.grid)
        self.indices_per_position = tokenizer.indices_per_position
        self.codebook_size = tokenizer.codebook_size
        self.dim = tokenizer.code_dim * tokenizer.indices_per_position
        if config.embedding == "codebook":
            self.register_buffer(
                "codebook", codebook, persistent=False
            )  # always this tokenizer's, never a checkpoint's
            self.learned = None
        else:
            self.learned = nn.Embedding(tokenizer.codebook_size, tokenizer.code_dim)
            nn.init.normal_(self.learned.weight, std=float(codebook.std()) or 1.0)
        if config.position == "learned-2d":
            self.rows = nn.Parameter(torch.zeros(self.grid[0], self.dim))
            self.columns = nn.Parameter(torch.zeros(self.grid[1], self.dim))
            std = config.position_init_std
            if std is None:  # twice the code vectors' scale: where a token stands shows from the first step
                std = 2.0 * (float(codebook.std()) or 1.0)
            nn.init.normal_(self.rows, std=std)
            nn.init.normal_(self.columns, std=std)
        else:
            self.rows = self.columns = None

    @property
    def length(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() == 3:
            codes = codes.unsqueeze(1)  # b h w -> b 1 h w
        if codes.dim() != 4 or codes.shape[1] != self.indices_per_position or tuple(codes.shape[2:]) != self.grid:
            raise ValueError(
                f"batch['codes'] has shape {tuple(codes.shape)}; expected b x {self.grid[0]} x {self.grid[1]} "
                f"(or b x {self.indices_per_position} x h x w) for this tokenizer"
            )
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"batch['codes'] must hold integer code indices, got {codes.dtype}")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(
                f"batch['codes'] holds indices in [{low}, {high}], outside [0, {self.codebook_size}): "
                "were the codes cached with another tokenizer?"
            )
        codes = codes.long()
        vectors = self.learned(codes) if self.learned is not None else self.codebook[codes]  # b k h w d
        tokens = vectors.permute(0, 2, 3, 1, 4).flatten(3)  # b k h w d -> b h w (k d)
        if self.rows is not None:
            tokens = tokens + self.rows[None, :, None, :] + self.columns[None, None, :, :]
        return tokens.flatten(1, 2)  # b (h w) d
