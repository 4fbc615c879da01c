"""A pre-LN causal transformer with a key/value cache (the trunk of ``code-gpt``).

taming's sampler recomputes the whole prefix for every new code, O(N^2) token evaluations per
image. With the cache each step evaluates one new token and attends to the stored keys and values
of the earlier ones. The cache is preallocated to the sequence length, so no step allocates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of every layer for one batch of sequences, ``layers x b heads capacity head_dim``."""

    def __init__(self, layers: int, batch: int, heads: int, capacity: int, head_dim: int, like: torch.Tensor):
        shape = (layers, batch, heads, capacity, head_dim)
        self.keys = like.new_zeros(shape)
        self.values = like.new_zeros(shape)
        self.length = 0  # positions stored so far (the same for every layer once a forward pass ends)

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


def attention_mask(queries: int, offset: int, keep: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Boolean mask ``b|1, 1, queries, offset + queries``: causal, minus padded keys, each query sees itself.

    ``keep`` (``b total``, True at real tokens) hides padding; a query always attends to its own position so
    that a padded query's softmax has a defined row (its output is never read as a prediction).
    """
    total = offset + queries
    query_position = torch.arange(offset, total, device=device)[:, None]
    key_position = torch.arange(total, device=device)[None, :]
    allowed = key_position <= query_position  # s total
    if keep is not None:
        allowed = (allowed[None] & keep[:, None, :total]) | (key_position == query_position)[None]
        return allowed[:, None]  # b 1 s total
    return allowed[None, None]


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None, cache: KVCache | None, layer: int, offset: int
    ) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x b h s e
        if cache is not None:
            cache.keys[layer, :, :, offset : offset + s] = k
            cache.values[layer, :, :, offset : offset + s] = v
            k = cache.keys[layer, :, :, : offset + s]
            v = cache.values[layer, :, :, : offset + s]
        dropout = self.dropout if self.training else 0.0
        if keep is None and offset == 0:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif keep is None and s == 1:  # one new token sees every stored one
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            mask = attention_mask(s, offset, keep, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(b, s, d)  # b s (h e)
        return self.resid_dropout(self.proj(out))


class MLP(nn.Sequential):
    """GELU MLP with a 4x hidden width."""

    def __init__(self, width: int, dropout: float):
        super().__init__(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout))


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln_attention = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads, dropout)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, x, keep, cache, layer, offset):
        x = x + self.attention(self.ln_attention(x), keep, cache, layer, offset)
        return x + self.mlp(self.ln_mlp(x))


class CausalTransformer(nn.Module):
    """Token embedding + learned positions -> pre-LN blocks -> LayerNorm -> logits over ``outputs`` classes.

    Inputs are embeddings (``b s d``), so that a condition can enter as projected vectors (text) as
    well as tokens (:meth:`embed`).
    """

    def __init__(self, vocab: int, outputs: int, width: int, layers: int, heads: int, positions: int, dropout: float):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, positions, width))
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs, bias=False)
        self.heads = heads
        self.apply(_init_weights)

    @property
    def positions(self) -> int:
        return self.position_embedding.shape[1]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)

    def new_cache(self, batch: int, like: torch.Tensor) -> KVCache:
        width = self.position_embedding.shape[2]
        return KVCache(len(self.blocks), batch, self.heads, self.positions, width // self.heads, like)

    def forward(
        self,
        embeddings: torch.Tensor,
        keep: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits ``b s outputs`` (``b 1 outputs`` with ``last_only``) for ``embeddings`` (``b s d``).

        With a cache the embeddings continue the cached sequence at position ``cache.length``; ``keep``
        (``b total``, True at real tokens) covers every position up to the end of this chunk.
        """
        offset = cache.length if cache is not None else 0
        s = embeddings.shape[1]
        if offset + s > self.positions:
            raise ValueError(f"sequence of {offset + s} tokens exceeds block_size {self.positions}")
        x = self.embedding_dropout(embeddings + self.position_embedding[:, offset : offset + s])
        for layer, block in enumerate(self.blocks):
            x = block(x, keep, cache, layer, offset)
        if cache is not None:
            cache.length = offset + s
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_final(x))


def _init_weights(module: nn.Module) -> None:
    """minGPT's initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
