"""Masked text prediction, ``type = "masked-text"`` (paper Eq. 6; docs/method.md: Masked text prediction).

Words of the caption are hidden; a small post-norm transformer reads the remaining text and
cross-attends to the code ViT tokens; a vocabulary head tied to the frozen text encoder's token
embeddings predicts the hidden tokens. The loss is a label-smoothed cross-entropy over masked tokens.

With the official ``text_input = "unmasked-contextual"`` the visible rows are features of the
*unmasked* caption, so the answer leaks through context (see :class:`MaskedTextConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.alignment.base import AlignmentInputs, AlignmentLoss
from lgvq_core.alignment.loss_configs import MaskedTextConfig
from lgvq_core.alignment.masking import last_real_column, sample_mask_ratio, select_masked
from lgvq_core.text_encoder import TextEncoder, TextFeatures

#: Score given to masked-out keys with ``attend_padding = false`` (filled, not added, as the official
#: decoder's ``masked_fill`` would, though its collapsed mask never selects a key).
MASKED_SCORE = -10000.0
#: Keeps the loss finite when no token of the batch is masked.
EMPTY_MASK_EPS = 5e-6


@dataclass
class FactoredCodes:
    """Code-ViT tokens kept as their two factors, ``tokens = features @ proj`` (features B×n×c, c the
    code ViT's width), so that cross-attention can run at width c (see :meth:`Attention.forward`)."""

    features: torch.Tensor  # b n c
    proj: torch.Tensor  # c w

    def to(self, dtype: torch.dtype) -> FactoredCodes:
        return FactoredCodes(self.features.to(dtype), self.proj.to(dtype))


class Attention(nn.Module):
    """Multi-head attention with q, k, v, out Linear(W, W), weights N(0, W^-1/2), no attention dropout.

    ``source_width`` (default ``width``) is the width of the rows keys and values are formed from:
    k and v are then Linear(source_width -> width), weights N(0, source_width^-1/2).
    """

    def __init__(self, width: int, heads: int, source_width: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"masked-text: decoder_heads = {heads} must divide the decoder width {width}")
        source_width = width if source_width is None else source_width
        self.heads = heads
        self.w_q = nn.Linear(width, width)
        self.w_k = nn.Linear(source_width, width)
        self.w_v = nn.Linear(source_width, width)
        self.w_out = nn.Linear(width, width)
        for linear in (self.w_q, self.w_k, self.w_v, self.w_out):
            nn.init.normal_(linear.weight, std=linear.in_features**-0.5)

    def forward(
        self, query: torch.Tensor, source: torch.Tensor | FactoredCodes, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v per head, then ``w_out``; ``mask`` B×L×n (True: key visible).

        With a :class:`FactoredCodes` source (k = features A_k^T + b_k, A_k = W_k proj^T; v alike) the
        same function is computed without forming keys or values at width W:
        q k^T = (q A_k) features^T + q.b_k and softmax(.) v = (softmax(.) features) A_v^T + b_v (its rows
        sum to 1). Equal up to float rounding, and far cheaper when c << W and n is large.
        """
        batch, length, width = query.shape
        head_dim = width // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:  # b n w -> b h n (w/h)
            return x.view(batch, x.shape[1], self.heads, head_dim).transpose(1, 2)

        q = split(self.w_q(query))
        if isinstance(source, FactoredCodes):
            features = source.features.unsqueeze(1)  # b 1 n c
            fold_k = (self.w_k.weight @ source.proj.T).view(self.heads, head_dim, -1)  # h (w/h) c
            fold_v = (self.w_v.weight @ source.proj.T).view(self.heads, head_dim, -1)
            bias_k = self.w_k.bias.view(self.heads, 1, head_dim)
            scores = (q @ fold_k) @ features.transpose(-1, -2) + (q * bias_k).sum(-1, keepdim=True)
            scores = scores / math.sqrt(head_dim)  # b h l n
        else:
            k, v = split(self.w_k(source)), split(self.w_v(source))
            scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # b h l n
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), MASKED_SCORE)
        if isinstance(source, FactoredCodes):
            bias_v = self.w_v.bias.view(self.heads, 1, head_dim)
            out = (scores.softmax(-1) @ features) @ fold_v.transpose(-1, -2) + bias_v  # b h l (w/h)
        else:
            out = scores.softmax(-1) @ v  # b h l (w/h)
        return self.w_out(out.transpose(1, 2).reshape(batch, length, width))


class FeedForward(nn.Module):
    """W -> W -> W with ReLU and dropout in between; weights N(0, W^-1/2)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(width, width)
        self.linear2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.linear1.weight, std=width**-0.5)
        nn.init.normal_(self.linear2.weight, std=width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class DecoderLayer(nn.Module):
    """Post-norm layer: [self-attention -> LN(x + .)] [cross-attention -> LN(x + .)] FFN -> LN(x + .).

    Dropout precedes each residual sum; LayerNorm eps is 1e-12. ``code_width`` is the width of the
    code tokens the cross-attention reads (default ``width``).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        dropout: float,
        self_attention: bool,
        cross_attention: bool,
        code_width: int | None = None,
    ) -> None:
        super().__init__()
        self.self_attention = Attention(width, heads) if self_attention else None
        self.norm1 = nn.LayerNorm(width, eps=1e-12) if self_attention else None
        self.cross_attention = Attention(width, heads, code_width) if cross_attention else None
        self.norm2 = nn.LayerNorm(width, eps=1e-12) if cross_attention else None
        self.ffn = FeedForward(width, dropout)
        self.norm3 = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, codes: torch.Tensor | FactoredCodes, pair_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if self.self_attention is not None:
            x = self.norm1(x + self.dropout(self.self_attention(x, x, pair_mask)))
        if self.cross_attention is not None:
            x = self.norm2(x + self.dropout(self.cross_attention(x, codes)))
        return self.norm3(x + self.dropout(self.ffn(x)))


class TextDecoder(nn.Module):
    """The text-side transformer: ``fused`` (official) or ``two-stage`` (paper) layout.

    ``width`` is its rows' width; ``code_width`` that of the code tokens it cross-attends to (default
    ``width``; the code ViT's output width W when the decoder is narrower).
    """

    def __init__(
        self, width: int, layers: int, heads: int, dropout: float, layout: str, code_width: int | None = None
    ) -> None:
        super().__init__()
        if layout == "fused":
            specs = [(True, True)] * layers
        elif layout == "two-stage":
            specs = [(True, False)] * layers + [(False, True)] * layers
        else:
            raise ValueError(f'masked-text: decoder must be "fused" or "two-stage", got {layout!r}')
        self.layers = nn.ModuleList(DecoderLayer(width, heads, dropout, s, c, code_width) for s, c in specs)

    def forward(
        self, text: torch.Tensor, codes: torch.Tensor | FactoredCodes, pair_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``text`` B×L×d, ``codes`` B×(N+1)×W (or its factors), ``pair_mask`` B×L×L (True: key visible
        to query) or ``None`` (every row attends to every row)."""
        for layer in self.layers:
            text = layer(text, codes, pair_mask)
        return text


class VocabularyHead(nn.Module):
    """logits = LN(GELU(A h)) E^T + b, with E the frozen token-embedding table passed at call time.

    A is Linear(``input_width`` -> ``width``): from the decoder's width (default ``width``, the text
    width W) to the width of E.

    With ``vocabulary_ids`` (sorted token ids, ``vocabulary = "captions"``) the head scores those
    tokens only: column j is token ``vocabulary_ids[j]``, with E's row of that token and its own
    bias entry, so its logits are the full head's logits at those columns for the same weights.
    The ids are a buffer: a checkpoint carries them, and loading one adopts its ids.
    """

    def __init__(
        self, width: int, vocab_size: int, vocabulary_ids: torch.Tensor | None = None, input_width: int | None = None
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(width if input_width is None else input_width, width)
        self.norm = nn.LayerNorm(width)
        if vocabulary_ids is not None:
            vocabulary_ids = torch.as_tensor(vocabulary_ids, dtype=torch.long).flatten()
            if len(vocabulary_ids) == 0:
                raise ValueError("masked-text: the head's vocabulary is empty")
            if not bool((vocabulary_ids[1:] > vocabulary_ids[:-1]).all()):
                raise ValueError("masked-text: the head's vocabulary ids must be sorted and distinct")
            if int(vocabulary_ids[0]) < 0 or int(vocabulary_ids[-1]) >= vocab_size:
                raise ValueError(f"masked-text: the head's vocabulary ids must lie in [0, {vocab_size})")
        self.register_buffer("vocabulary_ids", vocabulary_ids)  # k, or None: every token
        self.bias = nn.Parameter(torch.zeros(vocab_size if vocabulary_ids is None else len(vocabulary_ids)))

    def forward(self, hidden: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(F.gelu(self.fc(hidden)))
        table = token_embedding.detach()
        if self.vocabulary_ids is not None:
            table = table.index_select(0, self.vocabulary_ids.to(table.device))  # v w -> k w
        return hidden @ table.to(hidden.dtype).T + self.bias  # m w -> m v (or m k)

    def columns(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The logit column of each token id (the id itself when the head scores every token)."""
        if self.vocabulary_ids is None:
            return token_ids
        vocabulary = self.vocabulary_ids
        columns = torch.searchsorted(vocabulary, token_ids).clamp_max(len(vocabulary) - 1)
        missing = vocabulary[columns] != token_ids
        if bool(missing.any()):
            raise ValueError(
                f"masked-text: token id {int(token_ids[missing][0])} is not in the head's vocabulary of "
                f'{len(vocabulary)} caption tokens (vocabulary = "captions" keeps the word tokens of the '
                'training captions); captions from elsewhere need vocabulary = "full"'
            )
        return columns

    def token_ids(self, columns: torch.Tensor) -> torch.Tensor:
        """The token id of each logit column (the inverse of :meth:`columns`)."""
        return columns if self.vocabulary_ids is None else self.vocabulary_ids[columns]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint's caption vocabulary wins over the one built from the run file: its bias
        # entries belong to its tokens. Same objects, resized, so an optimizer keeps them.
        ids = state_dict.get(prefix + "vocabulary_ids")
        if ids is not None and self.vocabulary_ids is not None and ids.shape != self.vocabulary_ids.shape:
            self.vocabulary_ids = self.vocabulary_ids.new_empty(ids.shape)
            self.bias.data = self.bias.data.new_zeros(ids.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def caption_vocabulary(encoder: TextEncoder, captions: Iterable[str], chunk: int = 4096) -> torch.Tensor:
    """Sorted ids of the word tokens of ``captions`` as ``encoder`` tokenizes them (truncated to L).

    Only word tokens are ever masked, so specials and padding are left out.
    """
    seen = torch.zeros(encoder.vocab_size, dtype=torch.bool)

    def mark(batch: list[str]) -> None:
        ids, _, word_mask = encoder.tokenize(batch)
        seen[ids[word_mask.bool()].long()] = True

    batch: list[str] = []
    for caption in captions:
        batch.append(caption)
        if len(batch) == chunk:
            mark(batch)
            batch = []
    if batch:
        mark(batch)
    return seen.nonzero().flatten()


def encode_masked(encoder: TextEncoder, text: TextFeatures, masked: torch.Tensor) -> torch.Tensor:
    """B×L×W token states of the captions with the ``masked`` tokens replaced by the mask placeholder.

    Only the columns up to the batch's last real token are encoded (trailing columns that are padding
    in every caption come back as zero rows). For the real tokens this is the same computation: an
    encoder whose ``padding_invisible`` holds masks padding keys (MiniLM) or is causal with padding
    after the end token (CLIP), so no real token reads a padding column.
    """
    length = text.ids.shape[1]
    used = last_real_column(text.pad_mask) if getattr(encoder, "padding_invisible", False) else length
    ids = text.ids[:, :used]
    ids = torch.where(masked[:, :used], torch.full_like(ids, encoder.mask_placeholder_id), ids)
    states, _ = encoder.encode_ids(ids, text.pad_mask[:, :used])
    return F.pad(states, (0, 0, 0, length - used))  # b used w -> b l w


def label_smoothed_nll(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per row: (1 - eps)(-log p[y]) + eps * mean_v(-log p[v])."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (1.0 - smoothing) * nll + smoothing * -log_probs.mean(-1)


class MaskedTextLoss(AlignmentLoss):
    """Masked-word prediction from the codes. Trainable: mask embeddings m, decoder, head (A, LN, b),
    and with ``decoder_width`` the in-projection of the text rows.

    :param width: W, the text encoder's token-state width.
    :param vocab_size: V, the text encoder's vocabulary size.
    :param context_length: L, tokens per caption (one learned mask embedding per position).
    :param vocabulary_ids: with ``vocabulary = "captions"``, the sorted token ids the head scores.
    """

    uses_code_vit = True

    def __init__(
        self,
        config: MaskedTextConfig,
        width: int,
        vocab_size: int,
        context_length: int,
        vocabulary_ids: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        #: Factored cross-attention reads the code ViT's two factors, not the W-wide tokens.
        self.reads_vit_tokens = not config.factored_cross_attention
        #: d, the decoder's width: W officially, ``decoder_width`` when set.
        self.decoder_width = width if config.decoder_width is None else config.decoder_width
        if self.decoder_width % config.decoder_heads:
            what = f"the text width W = {width}" if config.decoder_width is None else "decoder_width"
            raise ValueError(
                f"masked-text: decoder_heads = {config.decoder_heads} must divide {what} ({self.decoder_width})"
            )
        self.mask_embedding = nn.Parameter(torch.empty(context_length, self.decoder_width))  # l d
        nn.init.normal_(self.mask_embedding, std=0.01)
        self.decoder = TextDecoder(
            self.decoder_width,
            config.decoder_layers,
            config.decoder_heads,
            config.dropout,
            config.decoder,
            code_width=width,
        )
        self.head = VocabularyHead(width, vocab_size, vocabulary_ids, input_width=self.decoder_width)
        # Text rows W -> d; none officially (the decoder reads the rows as they are).
        self.input_proj = None if config.decoder_width is None else nn.Linear(width, self.decoder_width)
        if self.input_proj is not None:
            nn.init.normal_(self.input_proj.weight, std=width**-0.5)

    def leak_warning(self, encoder) -> str | None:
        """Why this configuration lets the decoder read the masked words from ``encoder``'s features."""
        return self.config.leak_warning(encoder)

    def forward(self, inputs: AlignmentInputs) -> torch.Tensor:
        return self.masked_loss(inputs, self.draw_mask(inputs.text, inputs.text_encoder))

    def draw_mask(self, text: TextFeatures, text_encoder=None) -> torch.Tensor:
        """B×L bool: the tokens to hide this step (docs/method.md: Masked text prediction, masking)."""
        config = self.config
        count = 1 if config.mask_ratio_per == "batch" else len(text)
        ratio = sample_mask_ratio(config.mask_ratio, count, device=text.ids.device)
        unit_ids = None
        if config.mask_unit == "word":
            if text_encoder is None:
                raise ValueError('masked-text: mask_unit = "word" needs the text encoder (its word_ids)')
            unit_ids = text_encoder.word_ids(text.ids)
        return select_masked(text.word_mask, ratio, unit_ids, config.min_masked)

    def decoder_inputs(self, inputs: AlignmentInputs, masked: torch.Tensor, columns: int | None = None) -> torch.Tensor:
        """h0 (B×L×d): text rows where visible, mask embeddings where masked, zero on padding; with
        ``columns``, the first ``columns`` columns only (B×columns×d)."""
        text = inputs.text
        length = text.ids.shape[1]
        if length != self.mask_embedding.shape[0]:
            raise ValueError(
                f"masked-text was built for captions of {self.mask_embedding.shape[0]} tokens, got {length}; "
                "the text encoder's context_length changed"
            )
        used = length if columns is None else columns
        if self.config.text_input == "token-embedding" and self.input_proj is not None:
            rows = self._projected_token_rows(inputs, used)
            return self.decoder_rows(rows, masked[:, :used], text.pad_mask[:, :used], projected=True)
        rows = self._visible_rows(inputs, masked, used)
        return self.decoder_rows(rows, masked[:, :used], text.pad_mask[:, :used])

    def _projected_token_rows(self, inputs: AlignmentInputs, columns: int) -> torch.Tensor:
        """B×columns×d: the in-projection of each token's embedding, computed once per distinct token of
        the batch and gathered (the same rows as projecting every position, up to float rounding)."""
        encoder = inputs.text_encoder
        if encoder is None:
            raise ValueError(
                'masked-text: text_input = "token-embedding" needs the text encoder in the alignment inputs'
            )
        ids = inputs.text.ids[:, :columns]
        distinct, inverse = torch.unique(ids, return_inverse=True)
        with torch.no_grad():
            table = encoder.embed_ids(distinct.unsqueeze(0))[0].detach()  # u w
        return self.input_proj(table.to(self.mask_embedding.dtype))[inverse]  # b l d

    def decoder_rows(
        self, rows: torch.Tensor, masked: torch.Tensor, pad_mask: torch.Tensor, projected: bool = False
    ) -> torch.Tensor:
        """h0 (B×L×d) from the visible text rows ``rows`` (B×L×W; their masked rows are ignored): the rows
        through the in-projection (``decoder_width``), the mask embedding at ``masked``, zero at padding.
        ``projected``: ``rows`` are B×L×d, already through the in-projection.

        Training and the ``masked-words`` evaluation both build the decoder input here.
        """
        dtype = self.mask_embedding.dtype
        rows = rows.to(dtype)
        if self.input_proj is not None and not projected:
            rows = self.input_proj(rows).to(dtype)  # b l w -> b l d (in the parameters' dtype under autocast)
        hidden = torch.where(masked.unsqueeze(-1), self.mask_embedding[: rows.shape[1]], rows)
        return hidden * pad_mask.unsqueeze(-1).to(hidden.dtype)

    def _visible_rows(self, inputs: AlignmentInputs, masked: torch.Tensor, columns: int) -> torch.Tensor:
        """B×columns×W: the text rows of the first ``columns`` columns."""
        text, encoder, mode = inputs.text, inputs.text_encoder, self.config.text_input
        if mode == "unmasked-contextual":
            return text.token_states[:, :columns].detach()
        if encoder is None:
            raise ValueError(f'masked-text: text_input = "{mode}" needs the text encoder in the alignment inputs')
        with torch.no_grad():
            if mode == "token-embedding":
                return encoder.embed_ids(text.ids[:, :columns]).detach()
            return encode_masked(encoder, text, masked)[:, :columns].detach()

    def decode(
        self, hidden: torch.Tensor, vit_tokens: torch.Tensor | FactoredCodes, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        """Decoder output B×L'×d for the rows ``hidden`` (B×L×d, from :meth:`decoder_rows`) and the
        code-ViT tokens B×(N+1)×W (or their :class:`FactoredCodes`).

        With ``attend_padding`` (official) every one of the L rows attends to every row, padding rows
        included, and L' = L: the official decoder's mask masks nothing, so a padding row (zero at the
        input, image information after the first cross-attention) changes the real tokens' outputs.
        Without it padding keys are masked, and the trailing columns that are padding in every caption
        are dropped first (L' <= L): they then change nothing, so the decoder runs on fewer rows.
        """
        codes = vit_tokens.to(hidden.dtype)
        if self.config.attend_padding:
            return self.decoder(hidden, codes, None)
        used = last_real_column(pad_mask)
        pad = pad_mask.bool()[:, :used]
        pair_mask = pad.unsqueeze(2) & pad.unsqueeze(1)  # b l l
        return self.decoder(hidden[:, :used], codes, pair_mask)

    def masked_loss(self, inputs: AlignmentInputs, masked: torch.Tensor) -> torch.Tensor:
        """Sum of per-token losses over masked non-padding tokens / (their count + 5e-6)."""
        codes = inputs.vit_tokens
        if self.config.factored_cross_attention and inputs.vit_features is not None and inputs.vit_proj is not None:
            codes = FactoredCodes(inputs.vit_features, inputs.vit_proj)
        if codes is None:
            raise ValueError("masked-text needs the code ViT tokens; build it through build_alignment_module")
        text = inputs.text
        pad = text.pad_mask.bool()
        masked = masked & text.word_mask.bool()
        # Without attend_padding the decoder drops the trailing all-padding columns (see decode): their
        # rows are then not built either.
        columns = None if self.config.attend_padding else last_real_column(pad)
        hidden = self.decode(self.decoder_inputs(inputs, masked, columns), codes, pad)  # b l' d
        used = hidden.shape[1]
        targets = (masked & pad)[:, :used]
        # Gather masked rows before the head: logits only where they count (m v, not b l v); A maps d -> W.
        logits = self.head(hidden[targets], inputs.text_encoder.token_embedding)
        labels = self.head.columns(text.ids[:, :used][targets].long())
        per_token = label_smoothed_nll(logits, labels, self.config.label_smoothing)
        return per_token.sum() / (targets.sum() + EMPTY_MASK_EPS)


def build_masked_text(config: MaskedTextConfig, context) -> MaskedTextLoss:
    """Factory of ``masked-text``: sizes come from ``context.text_encoder`` (W, V, L); with
    ``vocabulary = "captions"`` the head's tokens come from ``context.train_captions``."""
    encoder = getattr(context, "text_encoder", None)
    if encoder is None:
        raise ValueError("masked-text needs the text encoder in the build context ([text_encoder] in the run file)")
    vocabulary_ids = None
    if config.vocabulary == "captions":
        captions = getattr(context, "train_captions", None)
        if captions is None:
            raise ValueError('masked-text: vocabulary = "captions" needs the training captions in the build context')
        vocabulary_ids = caption_vocabulary(encoder, captions())
        if len(vocabulary_ids) == 0:
            raise ValueError('masked-text: vocabulary = "captions" found no word token in the training captions')
    return MaskedTextLoss(config, encoder.width, encoder.vocab_size, encoder.context_length, vocabulary_ids)
