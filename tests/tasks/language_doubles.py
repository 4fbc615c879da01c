"""Small stand-ins of the language-task tests: a frozen tokenizer and toy captions."""

from __future__ import annotations

import torch

from lgvq_core.downstream import FrozenTokenizer

CAPTIONS = [
    "a red circle on the left",
    "two blue squares below a line",
    "a green triangle above a red circle",
    "nothing at all in this picture",
]


def frozen_tokenizer(codebook_size: int = 16, grid: tuple[int, int] = (2, 2), code_dim: int = 8) -> FrozenTokenizer:
    codebook = torch.randn(codebook_size, code_dim, generator=torch.Generator().manual_seed(0))
    return FrozenTokenizer(codebook_size, grid, code_dim, codebook)


def distinct_codes(count: int, tokenizer: FrozenTokenizer) -> torch.Tensor:
    """``count`` code grids that differ in their first position (so images can be told apart)."""
    codes = torch.randint(
        0, tokenizer.codebook_size, (count, *tokenizer.grid), generator=torch.Generator().manual_seed(1)
    )
    codes[:, 0, 0] = torch.arange(count) % tokenizer.codebook_size
    return codes


def fit(model: torch.nn.Module, batch: dict, steps: int, lr: float = 3e-3) -> dict:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.param_groups(0.0), lr=lr)
    for _ in range(steps):
        out = model.training_loss(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    return out
