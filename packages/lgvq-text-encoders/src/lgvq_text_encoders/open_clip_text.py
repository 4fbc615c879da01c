"""The text tower of an open_clip CLIP model, run in parts at L tokens (docs/method.md: Text encoders).

``encode_text`` of open_clip adds all of its position rows (77) and fixes the sequence length, so
the tower is run step by step: token embedding -> + the first L position rows -> transformer with
the causal mask cut to L×L -> final LayerNorm (``token_states``, B×L×W). ``sentence`` (B×E) is the
end-of-text state (the largest id of CLIP's vocabulary, hence ``argmax``) times ``text_projection``.

Only the text tower stays in memory; the image tower is dropped after loading.
"""

from __future__ import annotations

import torch
from torch import nn

from lgvq_core.api import ConfigError, TextEncoder, word_ids_from_starts
from lgvq_text_encoders.config import MIN_CONTEXT_LENGTH, OpenClipConfig
from lgvq_text_encoders.identity import encoder_identity, weights_digest
from lgvq_text_encoders.open_clip_weights import build_open_clip_model, check_supported, resolve

#: CLIP has no mask token; masked captions carry ``*`` at masked positions (docs/method.md: Text encoders).
MASK_PLACEHOLDER = "*"
_WORD_END = "</w>"


class OpenClipTextEncoder(TextEncoder):
    """A frozen open_clip text tower returning :class:`~lgvq_core.text_encoder.TextFeatures` at L tokens."""

    def __init__(self, config: OpenClipConfig) -> None:
        super().__init__()
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer

        resolved = resolve(config)
        check_supported(resolved)
        positions = resolved.model_config.get("text_cfg", {}).get("context_length", 77)
        _check_context_length(config.context_length, positions, resolved.name)
        tokenizer = open_clip.get_tokenizer(resolved.name)
        if not isinstance(tokenizer, SimpleTokenizer):
            raise ConfigError(
                [
                    f"$.text_encoder.model: open_clip model {resolved.name!r} uses a {type(tokenizer).__name__}; "
                    "only CLIP text towers with the CLIP BPE tokenizer are supported"
                ]
            )
        model = build_open_clip_model(config, resolved)
        tower = getattr(model, "text", model)  # CustomTextCLIP keeps its tower in .text, CLIP on itself
        pool_type = getattr(tower, "pool_type", getattr(tower, "text_pool_type", "argmax"))
        if pool_type not in ("argmax", "eos") or getattr(tower, "cls_emb", None) is not None:
            raise ConfigError(
                [f"$.text_encoder.model: open_clip model {resolved.name!r} does not pool its end-of-text token"]
            )

        self.config = config
        self.model_name = resolved.name
        # Modules and parameters are shared with the open_clip model, which is then dropped.
        self.embedding: nn.Embedding = tower.token_embedding
        self.positional_embedding: nn.Parameter = tower.positional_embedding
        self.transformer: nn.Module = tower.transformer
        self.ln_final: nn.Module = tower.ln_final
        self.text_projection = tower.text_projection  # Parameter W×E, Linear W->E, or None
        self.heads = int(getattr(tower, "heads", getattr(self.transformer.resblocks[0].attn, "num_heads", 1)))
        self.use_pad_mask = bool(getattr(tower, "use_pad_mask", False))
        full_mask = tower.attn_mask
        del model, tower

        self.max_context_length = self.positional_embedding.shape[0]
        length = config.context_length
        _check_context_length(length, self.max_context_length, resolved.name)
        self.causal = full_mask is not None
        # Causal with padding after EOT, or padding keys masked: real tokens never read padding.
        self.padding_invisible = self.causal or self.use_pad_mask
        self.register_buffer(
            "attn_mask", None if full_mask is None else full_mask[:length, :length].clone(), persistent=False
        )

        self.tokenizer = tokenizer
        self.width = self.embedding.embedding_dim
        self.embed_dim = self._sentence_dim()
        self.vocab_size = self.embedding.num_embeddings
        self.context_length = length
        self.bos_id = tokenizer.sot_token_id
        self.eos_id = tokenizer.eot_token_id
        self.pad_id = 0  # CLIP pads with 0, which is also the token "!": masks come from the EOT position
        self.mask_placeholder_id = tokenizer.encoder[MASK_PLACEHOLDER + _WORD_END]
        # 1 where a vocabulary entry ends a word (its BPE string ends with "</w>").
        word_end = torch.zeros(self.vocab_size, dtype=torch.bool)
        for token, index in tokenizer.encoder.items():
            if index < self.vocab_size and token.endswith(_WORD_END):
                word_end[index] = True
        self.register_buffer("word_end", word_end, persistent=False)

        settings = {
            "text_cfg": resolved.model_config.get("text_cfg", {}),
            "embed_dim": resolved.model_config.get("embed_dim"),
            "quick_gelu": resolved.quick_gelu,
        }
        self.identity = encoder_identity("open_clip", settings, length, weights_digest(self.state_dict()))
        self.freeze()

    def _sentence_dim(self) -> int:
        if self.text_projection is None:
            return self.width
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection.out_features
        return self.text_projection.shape[1]

    @property
    def token_embedding(self) -> torch.Tensor:
        return self.embedding.weight

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Truncation keeps the first L-1 tokens and writes EOT into the last slot.
        ids = self.tokenizer(list(captions), context_length=self.context_length)  # b l
        _, pad_mask, word_mask = self._masks_from_ids(ids)
        return ids, pad_mask, word_mask

    def _masks_from_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Real tokens run up to EOT, the largest id; id 0 ("!") may be a real token.
        positions = torch.arange(ids.shape[1], device=ids.device)
        pad_mask = positions <= ids.argmax(dim=1, keepdim=True)
        word_mask = pad_mask & (ids != self.bos_id) & (ids != self.eos_id)
        return ids, pad_mask, word_mask

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = ids.shape[1]
        if length > self.max_context_length:
            raise ValueError(f"{length} tokens exceed the {self.max_context_length} positions of {self.model_name}")
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.embedding(ids).to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)  # b l w
        mask = None
        if self.attn_mask is not None:
            mask = self.attn_mask[:length, :length].to(cast_dtype)  # l l, additive -inf above the diagonal
        if self.use_pad_mask:
            keys = torch.zeros(pad_mask.shape, dtype=cast_dtype, device=ids.device)
            keys = keys.masked_fill(~pad_mask, float("-inf"))[:, None, :].expand(-1, length, -1)  # b l l
            keys = keys.repeat_interleave(self.heads, dim=0)  # (b heads) l l
            mask = keys if mask is None else mask + keys
        x = self.transformer(x, attn_mask=mask)
        states = self.ln_final(x)  # b l w
        pooled = states[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=1)]  # b w, at EOT
        if self.text_projection is None:
            sentence = pooled
        elif isinstance(self.text_projection, nn.Linear):
            sentence = self.text_projection(pooled)
        else:
            sentence = pooled @ self.text_projection  # b e
        return states.float(), sentence.float()

    def word_ids(self, ids: torch.Tensor) -> torch.Tensor:
        _, _, word_mask = self._masks_from_ids(ids)
        # A piece starts a word when the piece before it ended one ("</w>").
        ended = self.word_end.to(ids.device)[ids]
        starts = torch.cat([torch.ones_like(ended[:, :1]), ended[:, :-1]], dim=1)
        return word_ids_from_starts(word_mask, starts)

    def decode_tokens(self, ids: torch.Tensor) -> list[str]:
        ids = ids.reshape(1, -1)
        _, pad_mask, _ = self._masks_from_ids(ids)
        decoder = self.tokenizer.decoder
        return [
            decoder.get(int(i), str(int(i))).replace(_WORD_END, "") if real else "<pad>"
            for i, real in zip(ids[0].tolist(), pad_mask[0].tolist(), strict=True)
        ]


def _check_context_length(length: int, positions: int, model: str) -> None:
    if not MIN_CONTEXT_LENGTH <= length <= positions:
        raise ConfigError(
            [
                f"$.text_encoder.context_length: {length} is outside [{MIN_CONTEXT_LENGTH}, {positions}] "
                f"(open_clip {model!r} has {positions} positions)"
            ]
        )


def build_open_clip(config: OpenClipConfig, context=None) -> OpenClipTextEncoder:
    """Factory of ``text_encoder`` ``open_clip``: the frozen tower on ``context.device``."""
    encoder = OpenClipTextEncoder(config)
    if context is not None and getattr(context, "device", None):
        encoder = encoder.to(context.device)
    return encoder.freeze()
