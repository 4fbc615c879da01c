"""Visual tokens -> an LM prefix (ClipCap's mapping network), and the model part captioning and VQA share.

- ``mlp``: each visual token through D -> 2W -> W (GELU): one prefix token per code position.
- ``transformer``: ClipCap's transformer mapper: visual tokens projected to W, followed by
  ``prefix_length`` learned queries, a small bidirectional encoder, the query outputs as the prefix.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lgvq_core.api import FrozenTokenizer

from .config import PrefixLanguageModelConfig
from .language_model import build_language_model
from .param_groups import linear_weight_decay_groups
from .visual_tokens import VisualTokens
from .vocabulary import WordVocabulary


def attention_heads(width: int, preferred: int = 8) -> int:
    """The largest head count <= ``preferred`` that divides ``width``."""
    return next(h for h in range(preferred, 0, -1) if width % h == 0)


class MLPPrefix(nn.Module):
    def __init__(self, visual_dim: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(visual_dim, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)  # b n D -> b n W


class TransformerPrefix(nn.Module):
    def __init__(self, visual_dim: int, width: int, prefix_length: int, layers: int) -> None:
        super().__init__()
        self.project = nn.Linear(visual_dim, width)
        self.queries = nn.Parameter(torch.randn(prefix_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, attention_heads(width), 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.project(tokens)  # b n W
        x = torch.cat([x, self.queries.expand(x.shape[0], -1, -1)], dim=1)
        return self.encoder(x)[:, tokens.shape[1] :]  # b P W


class PrefixLanguageModel(nn.Module):
    """Visual tokens -> prefix -> causal LM. ``prefix(codes)`` is b P W, P fixed for a tokenizer."""

    def __init__(
        self, config: PrefixLanguageModelConfig, tokenizer: FrozenTokenizer, vocabulary: WordVocabulary | None
    ) -> None:
        super().__init__()
        self.config = config
        self.visual = VisualTokens(config.visual, tokenizer)
        self.prefix_length = config.prefix_length if config.prefix_mapper == "transformer" else self.visual.length
        self.max_text_length = config.language_model.max_text_length
        self.lm = build_language_model(
            config.language_model, vocabulary, max_positions=self.prefix_length + self.max_text_length
        )
        if config.prefix_mapper == "transformer":
            self.mapper = TransformerPrefix(self.visual.dim, self.lm.width, config.prefix_length, config.mapper_layers)
        else:
            self.mapper = MLPPrefix(self.visual.dim, self.lm.width)

    def prefix(self, codes: torch.Tensor) -> torch.Tensor:
        return self.mapper(self.visual(codes))  # b h w -> b P W

    def param_groups(self, weight_decay: float) -> list[dict]:
        return linear_weight_decay_groups(self, weight_decay)


def training_vocabulary(config: PrefixLanguageModelConfig, texts: Iterable[str]) -> WordVocabulary | None:
    """The word vocabulary a scratch LM is built with (words of the training captions or questions seen
    at least ``min_word_count`` times); None for a transformers LM, which brings its own tokenizer."""
    if config.language_model.kind != "scratch":
        return None
    return WordVocabulary.from_texts(texts, config.language_model.min_word_count)


def texts_of(batch: dict, key: str, count: int) -> list[str]:
    """``batch[key]`` as a list of ``count`` strings, or an error naming the key."""
    if key not in batch:
        raise KeyError(f"the batch has no {key!r} (keys: {sorted(batch)}); this task needs it from the dataset")
    texts = batch[key]
    if isinstance(texts, str) or len(texts) != count:
        raise ValueError(f"batch[{key!r}] must be a list of {count} strings (one per image), got {texts!r:.200}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"batch[{key!r}][{i}] must be a string, got {type(text).__name__}")
    return list(texts)
