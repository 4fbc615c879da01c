"""Masked text prediction, ``type = "masked-text"`` (paper Eq. 6; docs/method.md: Masked text prediction).

Words of the caption are hidden; a small post-norm transformer reads the remaining text and
cross-attends to the code ViT tokens; a vocabulary head tied to the frozen text encoder's token
embeddings predicts the hidden tokens. The loss is a label-smoothed cross-entropy over masked tokens.

With the official ``text_input = "unmasked-contextual"`` the visible rows are features of the
*unmasked* caption, so the answer leaks through context (see :class:`MaskedTextConfig`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.alignment.base import AlignmentInputs, AlignmentLoss
from lgvq_core.alignment.loss_configs import MaskedTextConfig
from lgvq_core.alignment.masking import sample_mask_ratio, select_masked
from lgvq_core.text_encoder import TextFeatures

#: Score given to masked-out keys with ``attend_padding = false`` (filled, not added, as the official
#: decoder's ``masked_fill`` would, though its collapsed mask never selects a key).
MASKED_SCORE = -10000.0
#: Keeps the loss finite when no token of the batch is masked.
EMPTY_MASK_EPS = 5e-6


class Attention(nn.Module):
    """Multi-head attention with q, k, v, out Linear(W, W), weights N(0, W^-1/2), no attention dropout."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"masked-text: decoder_heads = {heads} must divide the text width W = {width}")
        self.heads = heads
        self.w_q, self.w_k, self.w_v, self.w_out = (nn.Linear(width, width) for _ in range(4))
        for linear in (self.w_q, self.w_k, self.w_v, self.w_out):
            nn.init.normal_(linear.weight, std=width**-0.5)

    def forward(self, query: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = query.shape
        head_dim = width // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:  # b n w -> b h n (w/h)
            return x.view(batch, x.shape[1], self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.w_q(query)), split(self.w_k(source)), split(self.w_v(source))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # b h l n
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), MASKED_SCORE)
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

    Dropout precedes each residual sum; LayerNorm eps is 1e-12.
    """

    def __init__(self, width: int, heads: int, dropout: float, self_attention: bool, cross_attention: bool) -> None:
        super().__init__()
        self.self_attention = Attention(width, heads) if self_attention else None
        self.norm1 = nn.LayerNorm(width, eps=1e-12) if self_attention else None
        self.cross_attention = Attention(width, heads) if cross_attention else None
        self.norm2 = nn.LayerNorm(width, eps=1e-12) if cross_attention else None
        self.ffn = FeedForward(width, dropout)
        self.norm3 = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, codes: torch.Tensor, pair_mask: torch.Tensor | None) -> torch.Tensor:
        if self.self_attention is not None:
            x = self.norm1(x + self.dropout(self.self_attention(x, x, pair_mask)))
        if self.cross_attention is not None:
            x = self.norm2(x + self.dropout(self.cross_attention(x, codes)))
        return self.norm3(x + self.dropout(self.ffn(x)))


class TextDecoder(nn.Module):
    """The text-side transformer: ``fused`` (official) or ``two-stage`` (paper) layout."""

    def __init__(self, width: int, layers: int, heads: int, dropout: float, layout: str) -> None:
        super().__init__()
        if layout == "fused":
            specs = [(True, True)] * layers
        elif layout == "two-stage":
            specs = [(True, False)] * layers + [(False, True)] * layers
        else:
            raise ValueError(f'masked-text: decoder must be "fused" or "two-stage", got {layout!r}')
        self.layers = nn.ModuleList(DecoderLayer(width, heads, dropout, s, c) for s, c in specs)

    def forward(self, text: torch.Tensor, codes: torch.Tensor, pair_mask: torch.Tensor | None) -> torch.Tensor:
        """``text`` B×L×W, ``codes`` B×(N+1)×W, ``pair_mask`` B×L×L (True: key visible to query) or
        ``None`` (every row attends to every row)."""
        for layer in self.layers:
            text = layer(text, codes, pair_mask)
        return text


class VocabularyHead(nn.Module):
    """logits = LN(GELU(A h)) E^T + b, with E the frozen token-embedding table passed at call time."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(F.gelu(self.fc(hidden)))
        return hidden @ token_embedding.detach().to(hidden.dtype).T + self.bias  # m w -> m v


def label_smoothed_nll(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per row: (1 - eps)(-log p[y]) + eps * mean_v(-log p[v])."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (1.0 - smoothing) * nll + smoothing * -log_probs.mean(-1)


class MaskedTextLoss(AlignmentLoss):
    """Masked-word prediction from the codes. Trainable: mask embeddings m, decoder, head (A, LN, b).

    :param width: W, the text encoder's token-state width.
    :param vocab_size: V, the text encoder's vocabulary size.
    :param context_length: L, tokens per caption (one learned mask embedding per position).
    """

    uses_code_vit = True

    def __init__(self, config: MaskedTextConfig, width: int, vocab_size: int, context_length: int) -> None:
        super().__init__()
        self.config = config
        self.mask_embedding = nn.Parameter(torch.empty(context_length, width))  # l w
        nn.init.normal_(self.mask_embedding, std=0.01)
        self.decoder = TextDecoder(width, config.decoder_layers, config.decoder_heads, config.dropout, config.decoder)
        self.head = VocabularyHead(width, vocab_size)

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

    def decoder_inputs(self, inputs: AlignmentInputs, masked: torch.Tensor) -> torch.Tensor:
        """h0 (B×L×W): text rows where visible, mask embeddings where masked, zero on padding."""
        text = inputs.text
        length = text.ids.shape[1]
        if length != self.mask_embedding.shape[0]:
            raise ValueError(
                f"masked-text was built for captions of {self.mask_embedding.shape[0]} tokens, got {length}; "
                "the text encoder's context_length changed"
            )
        rows = self._visible_rows(inputs, masked).to(self.mask_embedding.dtype)
        hidden = torch.where(masked.unsqueeze(-1), self.mask_embedding, rows)
        return hidden * text.pad_mask.unsqueeze(-1).to(hidden.dtype)

    def _visible_rows(self, inputs: AlignmentInputs, masked: torch.Tensor) -> torch.Tensor:
        text, encoder, mode = inputs.text, inputs.text_encoder, self.config.text_input
        if mode == "unmasked-contextual":
            return text.token_states.detach()
        if encoder is None:
            raise ValueError(f'masked-text: text_input = "{mode}" needs the text encoder in the alignment inputs')
        with torch.no_grad():
            if mode == "token-embedding":
                return encoder.embed_ids(text.ids).detach()
            placeholder = torch.full_like(text.ids, encoder.mask_placeholder_id)
            states, _ = encoder.encode_ids(torch.where(masked, placeholder, text.ids), text.pad_mask)
            return states.detach()

    def decode(self, hidden: torch.Tensor, vit_tokens: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Decoder output B×L'×W for the rows ``hidden`` (B×L×W) and the code-ViT tokens B×(N+1)×W.

        With ``attend_padding`` (official) every one of the L rows attends to every row, padding rows
        included, and L' = L: the official decoder's mask masks nothing, so a padding row (zero at the
        input, image information after the first cross-attention) changes the real tokens' outputs.
        Without it padding keys are masked, and the trailing columns that are padding in every caption
        are dropped first (L' <= L): they then change nothing, so the decoder runs on fewer rows.
        """
        codes = vit_tokens.to(hidden.dtype)
        if self.config.attend_padding:
            return self.decoder(hidden, codes, None)
        pad = pad_mask.bool()
        columns = torch.arange(1, pad.shape[1] + 1, device=pad.device)
        used = max(1, int((pad.any(0) * columns).max()))
        pad = pad[:, :used]
        pair_mask = pad.unsqueeze(2) & pad.unsqueeze(1)  # b l l
        return self.decoder(hidden[:, :used], codes, pair_mask)

    def masked_loss(self, inputs: AlignmentInputs, masked: torch.Tensor) -> torch.Tensor:
        """Sum of per-token losses over masked non-padding tokens / (their count + 5e-6)."""
        if inputs.vit_tokens is None:
            raise ValueError("masked-text needs the code ViT tokens; build it through build_alignment_module")
        text = inputs.text
        pad = text.pad_mask.bool()
        masked = masked & text.word_mask.bool()
        hidden = self.decode(self.decoder_inputs(inputs, masked), inputs.vit_tokens, pad)  # b l' w
        used = hidden.shape[1]
        targets = (masked & pad)[:, :used]
        # Gather masked rows before the head: logits only where they count (m v, not b l v).
        logits = self.head(hidden[targets], inputs.text_encoder.token_embedding)
        per_token = label_smoothed_nll(logits, text.ids[:, :used][targets].long(), self.config.label_smoothing)
        return per_token.sum() / (targets.sum() + EMPTY_MASK_EPS)


def build_masked_text(config: MaskedTextConfig, context) -> MaskedTextLoss:
    """Factory of ``masked-text``: sizes come from ``context.text_encoder`` (W, V, L)."""
    encoder = getattr(context, "text_encoder", None)
    if encoder is None:
        raise ValueError("masked-text needs the text encoder in the build context ([text_encoder] in the run file)")
    return MaskedTextLoss(config, encoder.width, encoder.vocab_size, encoder.context_length)
