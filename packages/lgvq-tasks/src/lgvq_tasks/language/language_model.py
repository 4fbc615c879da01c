"""The causal LM behind captioning and VQA, behind one small interface for training and decoding.

Two kinds (``language_model.kind``):

- ``scratch``: :class:`ScratchLanguageModel`, a :class:`~.scratch_decoder.ScratchDecoder` over a
  :class:`~.vocabulary.WordVocabulary` of the training text. The vocabulary's words travel in the
  state dict (``extra_state``), so a checkpoint restores the exact ids.
- ``transformers``: :class:`TransformersLanguageModel`, any local causal-LM checkpoint and its tokenizer
  read with ``local_files_only`` (nothing is downloaded); its cache is ``past_key_values``.

Both take input embeddings (a visual prefix first, then token embeddings) and return
``(logits b t' V, hidden b t W, cache)``, with logits of the last ``keep_logits`` positions only when
given (a prefix of hundreds of positions times a 50k-word output would be gigabytes); :meth:`reorder_cache` selects batch rows of a cache (beam search).
Text is normalised to lower-case words first (:func:`~.vocabulary.words_of`) for both kinds.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import LanguageModelConfig
from .scratch_decoder import ScratchDecoder
from .vocabulary import WordVocabulary, words_of


class ScratchLanguageModel(nn.Module):
    def __init__(self, config: LanguageModelConfig, vocabulary: WordVocabulary, max_positions: int) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.width = config.width
        self.eos_id = vocabulary.eos_id
        self.vocab_size = len(vocabulary)
        self.decoder = ScratchDecoder(
            len(vocabulary), config.width, config.layers, config.heads, config.dropout, max_positions
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.token_embedding(ids)  # b t -> b t W

    def forward(
        self, embeds: torch.Tensor, cache: Any = None, keep_logits: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        hidden, cache = self.decoder(embeds, cache)
        kept = hidden if keep_logits is None else hidden[:, hidden.shape[1] - keep_logits :]
        return self.decoder.logits(kept), hidden, cache

    @staticmethod
    def reorder_cache(cache: Any, rows: torch.Tensor) -> Any:
        return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache]

    def encode_text(self, texts: Sequence[str], max_length: int, eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> ids b T (right-padded) and lengths b (EOS included when ``eos``)."""
        ids = self.vocabulary.encode(texts, max_length, eos=eos)
        return ids, (ids != self.vocabulary.pad_id).sum(1)

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.vocabulary.decode(ids)

    def get_extra_state(self) -> dict:
        return {"words": list(self.vocabulary.words)}

    def set_extra_state(self, state: dict) -> None:
        if list(state["words"]) != self.vocabulary.words:
            raise ValueError(
                "the checkpoint's word vocabulary differs from this model's: build the model with "
                "WordVocabulary(checkpoint words), as vocabulary_from_state_dict does"
            )


class TransformersLanguageModel(nn.Module):
    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(str(config.path)).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"language_model.path {str(path)!r} has no config.json: give a local folder written by a "
                "transformers model's save_pretrained (with its tokenizer files); nothing is downloaded"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer at {str(path)!r} has no eos token; captions need an explicit end")
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.width = self.model.get_input_embeddings().embedding_dim
        # transformers 5 names the cache argument `cache`; 4.x names it `past_key_values`
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        # logits of the last positions only (a V-wide row per prefix position would be wasted memory)
        self._keep_argument = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in parameters), None)
        self.vocab_size = self.model.get_output_embeddings().out_features

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(
        self, embeds: torch.Tensor, cache: Any = None, keep_logits: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        options = {self._cache_argument: cache}
        if keep_logits is not None and self._keep_argument:
            options[self._keep_argument] = keep_logits
        output = self.model(inputs_embeds=embeds, use_cache=True, output_hidden_states=True, **options)
        new_cache = output.get("cache")
        if new_cache is None:
            new_cache = output.get("past_key_values")
        logits = output.logits
        if keep_logits is not None:
            logits = logits[:, logits.shape[1] - keep_logits :]
        return logits, output.hidden_states[-1], new_cache

    @staticmethod
    def reorder_cache(cache: Any, rows: torch.Tensor) -> Any:
        cache.reorder_cache(rows)
        return cache

    def encode_text(self, texts: Sequence[str], max_length: int, eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for text in texts:
            ids = self.tokenizer(" ".join(words_of(text)), add_special_tokens=False)["input_ids"]
            rows.append(ids[: max_length - 1] + [self.eos_id] if eos else ids[:max_length])
        width = max(1, max(len(r) for r in rows))
        out = torch.full((len(rows), width), self.eos_id, dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out, torch.tensor([len(r) for r in rows], dtype=torch.long)

    def decode_text(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return " ".join(words_of(self.tokenizer.decode(ids, skip_special_tokens=True)))


LanguageModel = ScratchLanguageModel | TransformersLanguageModel


def build_language_model(
    config: LanguageModelConfig, vocabulary: WordVocabulary | None, max_positions: int
) -> LanguageModel:
    if config.kind == "transformers":
        model = TransformersLanguageModel(config)
        limit = getattr(model.model.config, "max_position_embeddings", None) or getattr(
            model.model.config, "n_positions", None
        )
        if limit is not None and limit < max_positions:
            raise ValueError(
                f"the checkpoint at {config.path!r} has {limit} positions, fewer than the prefix plus "
                f"language_model.max_text_length ({max_positions}): shorten either"
            )
        return model
    if vocabulary is None:
        raise ValueError(
            "language_model.kind = 'scratch' needs a word vocabulary of the training text: "
            "WordVocabulary.from_texts(train captions or questions)"
        )
    return ScratchLanguageModel(config, vocabulary, max_positions)


def vocabulary_from_state_dict(state_dict: dict, prefix: str = "lm.") -> WordVocabulary | None:
    """The scratch LM's vocabulary stored in a model state dict (None for a transformers LM)."""
    state = state_dict.get(prefix + "_extra_state")
    return None if state is None else WordVocabulary(state["words"])
