"""A small pre-norm causal transformer decoder with its own key/value cache (nanoGPT-like).

It reads input *embeddings* (so a visual prefix can precede the text) and returns final-norm hidden
states; token logits use the tied token embedding. The cache is a list of per-layer ``(keys, values)``,
each ``b heads s d``; decoding one token attends to every cached position, so cached and uncached
decoding compute the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Cache = list[tuple[torch.Tensor, torch.Tensor]]


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        # x: b t w (the new positions); past: keys/values of earlier positions, b n s d
        b, t, width = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(b, t, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # three b n t d
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        new, total = q.shape[2], k.shape[2]
        mask, causal = None, False
        if new > 1 and total == new:
            causal = True
        elif new > 1:  # several new positions after a cache: position i sees everything up to its own
            offset = total - new
            mask = (
                torch.arange(total, device=x.device)[None, :] <= (offset + torch.arange(new, device=x.device))[:, None]
            )
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.residual_dropout(self.out(attended.transpose(1, 2).reshape(b, t, width)))
        x = x + self.residual_dropout(self.mlp(self.mlp_norm(x)))
        return x, (k, v)


class ScratchDecoder(nn.Module):
    """Token embedding (V x W, tied to the output), learned positions, ``layers`` causal blocks, final norm."""

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, dropout: float, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(max_positions, width)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, embeds: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        """``embeds`` b t W (positions after the cached ones) -> hidden b t W and the extended cache."""
        start = 0 if cache is None else cache[0][0].shape[2]
        stop = start + embeds.shape[1]
        if stop > self.max_positions:
            raise ValueError(
                f"sequence of {stop} positions exceeds the decoder's {self.max_positions} "
                "(prefix + language_model.max_text_length)"
            )
        positions = torch.arange(start, stop, device=embeds.device)
        x = self.embedding_dropout(embeds + self.position_embedding(positions)[None])
        new_cache: Cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.final_norm(x), new_cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.token_embedding.weight.t()  # b t V
