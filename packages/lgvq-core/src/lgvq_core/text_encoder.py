"""The text-encoder contract (docs/method.md: Text encoders) and the features every encoder returns."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from lgvq_core.contracts import ContractError, require_instance


@dataclass
class TextFeatures:
    """Frozen text features of a batch of captions, all padded/truncated to ``L``.

    ``ids`` B×L (with special tokens); ``pad_mask`` B×L bool (real tokens);
    ``word_mask`` B×L bool (maskable tokens: not special, not padding);
    ``token_states`` B×L×W (final-layer states after the final norm, before any projection);
    ``sentence`` B×E (the encoder's native sentence embedding).
    """

    ids: torch.Tensor
    pad_mask: torch.Tensor
    word_mask: torch.Tensor
    token_states: torch.Tensor
    sentence: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TextFeatures:
        return TextFeatures(
            **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)}
        )

    def __getitem__(self, index: slice | torch.Tensor | list[int]) -> TextFeatures:
        return TextFeatures(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __len__(self) -> int:
        return self.ids.shape[0]

    @staticmethod
    def cat(parts: list[TextFeatures]) -> TextFeatures:
        return TextFeatures(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(TextFeatures)})


def word_ids_from_starts(word_mask: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Group sub-word pieces: B×L word index (position of the word's first piece; -1 off words).

    ``starts`` marks tokens that begin a new word; a maskable token that follows a non-maskable
    one always begins a word, so pieces never join across specials or padding.
    """
    length = word_mask.shape[1]
    positions = torch.arange(length, device=word_mask.device).expand_as(word_mask)
    previous = torch.cat([torch.zeros_like(word_mask[:, :1]), word_mask[:, :-1]], dim=1)
    starts = word_mask & (starts | ~previous)
    first_piece = torch.where(starts, positions, torch.full_like(positions, -1)).cummax(dim=1).values
    return torch.where(word_mask, first_piece, torch.full_like(positions, -1))


class TextEncoder(nn.Module):
    """A frozen pre-trained text encoder.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`tokenize`,
    :meth:`encode_ids` and :meth:`embed_ids`. The runner calls :meth:`freeze`; the encoder is
    never in an optimizer and never in a checkpoint.
    """

    #: W: width of ``token_states``.
    width: int
    #: E: width of ``sentence``.
    embed_dim: int
    #: V: vocabulary size.
    vocab_size: int
    #: L: tokens per caption, specials included.
    context_length: int
    #: Whether token k only sees tokens <= k (CLIP) or the whole caption (BERT/MiniLM).
    causal: bool
    bos_id: int
    eos_id: int
    pad_id: int
    #: Token written at masked positions when a masked caption is encoded (CLIP: ``*``; BERT: ``[MASK]``).
    mask_placeholder_id: int
    #: Whether real tokens never read padding columns (padding keys are masked, or the encoder is causal
    #: and padding follows the last real token): :meth:`encode_ids` may then be given only the columns
    #: up to a batch's last real token, with the same states for the real tokens.
    padding_invisible: bool = False
    #: Name + config + checkpoint hash + L: the key of cached features.
    identity: str

    @property
    def token_embedding(self) -> torch.Tensor:
        """The frozen V×W token-embedding table (the masked-text vocabulary head is tied to it)."""
        raise NotImplementedError

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``ids``, ``pad_mask``, ``word_mask`` (B×L each, on CPU)."""
        raise NotImplementedError

    def encode_ids(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``token_states`` (B×L×W) and ``sentence`` (B×E) for token ids, without gradient."""
        raise NotImplementedError

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding-layer output (B×L×W) for ids, without context: a function of each id alone (no
        position embedding), which masked-text's ``token-embedding`` input relies on."""
        raise NotImplementedError

    def word_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """B×L index of the word each token belongs to (-1 for specials and padding).

        The default treats every maskable token as its own word; encoders with sub-word
        vocabularies override it so ``mask_unit = "word"`` masks all pieces together.
        """
        _, _, word_mask = self._masks_from_ids(ids)
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        return torch.where(word_mask, positions, torch.full_like(positions, -1))

    def _masks_from_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad_mask = ids != self.pad_id
        word_mask = pad_mask & (ids != self.bos_id) & (ids != self.eos_id)
        return ids, pad_mask, word_mask

    def decode_tokens(self, ids: torch.Tensor) -> list[str]:
        """Token strings of one row of ids (for reports)."""
        return [str(int(i)) for i in ids]

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextFeatures:
        """Tokenize and encode captions on the encoder's device."""
        ids, pad_mask, word_mask = self.tokenize(list(captions))
        device = self.token_embedding.device
        ids, pad_mask, word_mask = ids.to(device), pad_mask.to(device), word_mask.to(device)
        token_states, sentence = self.encode_ids(ids, pad_mask)
        return TextFeatures(ids, pad_mask, word_mask, token_states, sentence)

    def freeze(self) -> TextEncoder:
        """Make the encoder frozen: eval mode and no parameter requires grad."""
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> TextEncoder:
        # A frozen encoder stays in eval mode (no dropout) whatever its parent does.
        return super().train(False)


def check_text_encoder(component: TextEncoder, captions: list[str]) -> None:
    """The text-encoder contract on two captions: the shapes of ``encode``'s features, the token
    embedding table, ``embed_ids`` without position. Raises :class:`~lgvq_core.contracts.ContractError`."""
    require_instance(component, TextEncoder)
    features = component.encode(list(captions[:2]))
    length = component.context_length
    expected = {
        "ids": (2, length),
        "pad_mask": (2, length),
        "word_mask": (2, length),
        "token_states": (2, length, component.width),
        "sentence": (2, component.embed_dim),
    }
    for name, shape in expected.items():
        got = tuple(getattr(features, name).shape)
        if got != shape:
            raise ContractError(f"encode() returned {name} of shape {got}, expected {shape}")
    if tuple(component.token_embedding.shape) != (component.vocab_size, component.width):
        raise ContractError(
            f"token_embedding has shape {tuple(component.token_embedding.shape)}, expected (V, W) = "
            f"({component.vocab_size}, {component.width})"
        )
    ids = features.ids[:1].long()
    with torch.no_grad():
        rows = component.embed_ids(ids)
        alone = component.embed_ids(ids.flip(1)).flip(1)  # every id at another position
    if tuple(rows.shape) != (1, length, component.width) or not torch.allclose(rows, alone, atol=1e-6):
        raise ContractError(
            "embed_ids() must give each id its embedding-layer row, whatever its position (B×L×W, no "
            "position embedding): the token-embedding inputs of masked-text and relation rely on it"
        )
