"""Relationship alignment, ``type = "relation"`` (paper Eq. 7-8; docs/method.md: Relationship alignment).

Each caption token is matched to the image position whose code-ViT token it is most similar to;
the cosine relations between the matched (projected) codes are pulled towards the cosine
relations between the words. Official computation:

1. w = normalize(token_states) (B×L×W); o = normalize(Z_vit[:, 1:]) (B×N×W)
2. idx_k, s_k = argmax / max over the image's N positions of w_k . o_j
3. c_k = g(quant)[b, idx_k], g = Linear(D -> W) -> GELU -> LayerNorm(W) (``projection_width``: p, not W)
4. c_k <- normalize(s_k c_k) * pad_k
5. q = (w * pad)(w * pad)^T (detached), p = c c^T
6. L = mean over all B*L*L entries of (p - q)^2 (computed on the columns up to the batch's last real
   token: the trailing all-padding columns only add zeros to the sum)

Two exact reorderings of that computation keep it cheap. g acts on each position alone, so it runs
on the B×L matched codes only, not on all B×N positions (g(quant)[b, idx] = g(quant[b, idx])). And
the match (step 2) runs without autograd: the argmax passes no gradient, and since
normalize(s c) = sign(s) c / |c| does not depend on |s|, neither does the score s_k (its exact
gradient is zero; a graph through it would only carry rounding noise, about 1e-9 in fp32, into
the code ViT, at the price of a backward pass through the B×L×N similarities and the B×N×W
normalisation). The loss and the gradients of g and ``quant`` (or the codebook) are unchanged to the bit.

When the code ViT's factors are given (``Z_vit = features @ proj``, features B×(N+1)×c, c its width)
the match never forms the W-wide tokens: w_k . z_j = (w_k proj^T) . f_j and
|z_j|^2 = f_j^T (proj proj^T) f_j, so the cosines are computed at width c. The same numbers up to
float rounding (a near-tie between two positions may then resolve the other way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.alignment.base import AlignmentInputs, AlignmentLoss
from lgvq_core.alignment.loss_configs import RelationConfig
from lgvq_core.alignment.masking import last_real_column


class CodeProjection(nn.Sequential):
    """g: Linear(D -> W, weights N(0, 0.01)) -> GELU -> LayerNorm(W) (W: ``width``, the text width officially)."""

    def __init__(self, code_dim: int, width: int) -> None:
        super().__init__(nn.Linear(code_dim, width), nn.GELU(), nn.LayerNorm(width))
        nn.init.normal_(self[0].weight, std=0.01)


class RelationLoss(AlignmentLoss):
    """MSE between code-code and word-word cosine matrices.

    The match passes no gradient, so with the official options the gradient goes to ``g`` and
    through ``quant`` to the encoder; with ``code_source = "codebook"`` it goes to the codebook. The
    code ViT gets none from this loss.
    """

    uses_code_vit = True
    reads_vit_tokens = False  # the match uses the code ViT's factors when it has them

    def __init__(self, config: RelationConfig, code_dim: int, width: int) -> None:
        super().__init__()
        self.config = config
        if config.code_projection == "linear-gelu-ln":
            out_width = width if config.projection_width is None else config.projection_width
            self.projection: nn.Module = CodeProjection(code_dim, out_width)
        elif config.projection_width is not None:
            raise ValueError(
                'relation: projection_width sets the width of g, and code_projection = "none" has no g; '
                'unset projection_width or use code_projection = "linear-gelu-ln"'
            )
        elif code_dim != width:
            raise ValueError(
                f'relation: code_projection = "none" compares codes ({code_dim}-d) with words ({width}-d) '
                'directly and needs equal widths; set code_projection = "linear-gelu-ln"'
            )
        else:
            self.projection = nn.Identity()

    def forward(self, inputs: AlignmentInputs) -> torch.Tensor:
        config, text = self.config, inputs.text
        factored = inputs.vit_features is not None and inputs.vit_proj is not None
        if not factored and inputs.vit_tokens is None:
            raise ValueError("relation needs the code ViT tokens; build it through build_alignment_module")
        dtype = inputs.vit_features.dtype if factored else inputs.vit_tokens.dtype
        # Columns that are padding in every caption compare no pair (their entries are zeros of the
        # mean): the loss runs on the columns up to the last real token, the mean still over B*L*L.
        batch, length = text.ids.shape
        used = last_real_column(text.pad_mask)
        words = self._word_features(inputs)[:, :used].to(dtype)  # b l' w
        valid = text.pad_mask if config.pairs == "all-non-pad" else text.word_mask
        valid = valid[:, :used].bool()

        word_dirs = F.normalize(words, dim=-1)
        with torch.no_grad():  # no gradient passes the match (module doc)
            if factored:
                match = factored_cosines(word_dirs, inputs.vit_features[:, 1:], inputs.vit_proj.to(dtype))
            else:
                match = word_dirs @ F.normalize(inputs.vit_tokens[:, 1:], dim=-1).transpose(1, 2)  # b l n
            score, position = match.max(-1)  # b l

        code = self._matched_codes(inputs, position)  # b l d
        code = self.projection(code)  # b l w: g at the matched positions only
        if config.scale_by_match:
            code = code * score.unsqueeze(-1)
        keep = valid.unsqueeze(-1).to(code.dtype)
        code = F.normalize(code, dim=-1) * keep
        word_dirs = word_dirs * keep

        target = (word_dirs @ word_dirs.transpose(1, 2)).detach()  # q: b l l
        relation = code @ code.transpose(1, 2)  # p: b l l
        pair_mask = valid.unsqueeze(2) & valid.unsqueeze(1)
        if config.pairs == "words-offdiag":
            pair_mask = pair_mask & ~torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
        squared = (relation - target).square() * pair_mask.to(relation.dtype)
        if config.reduction == "mean-all":
            return squared.sum() / (batch * length * length)
        return squared.sum() / pair_mask.sum().clamp_min(1)

    def _word_features(self, inputs: AlignmentInputs) -> torch.Tensor:
        if self.config.word_features == "contextual":
            return inputs.text.token_states.detach()
        if inputs.text_encoder is None:
            raise ValueError('relation: word_features = "token-embedding" needs the text encoder in the inputs')
        with torch.no_grad():
            return inputs.text_encoder.embed_ids(inputs.text.ids).detach()

    def _matched_codes(self, inputs: AlignmentInputs, position: torch.Tensor) -> torch.Tensor:
        """B×L×D: the code at each token's matched image position."""
        if self.config.code_source == "straight-through":
            grid = inputs.quant.flatten(2).transpose(1, 2)  # b d h w -> b (h w) d
            return grid.gather(1, position.unsqueeze(-1).expand(-1, -1, grid.shape[-1]))
        indices = inputs.indices
        if indices.dim() == 4 and indices.shape[1] == 1:
            indices = indices[:, 0]
        if indices.dim() != 3:
            raise ValueError(
                'relation: code_source = "codebook" needs one code index per position (B×h×w), got indices of '
                f'shape {tuple(indices.shape)}; use code_source = "straight-through" with this quantizer'
            )
        code_index = indices.flatten(1).gather(1, position)  # b l
        return inputs.codebook[code_index]  # b l d


def factored_cosines(word_dirs: torch.Tensor, features: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """B×L×N: ``word_dirs`` (unit rows, B×L×W) . normalize(features @ proj) (features B×N×c, proj c×W),
    computed at width c: (word_dirs proj^T) features^T over |features_j @ proj| (F.normalize's 1e-12 floor)."""
    dots = (word_dirs @ proj.T) @ features.transpose(1, 2)  # b l c -> b l n
    norms = ((features @ (proj @ proj.T)) * features).sum(-1).clamp_min(0).sqrt()  # b n
    return dots / norms.clamp_min(1e-12).unsqueeze(1)


def build_relation(config: RelationConfig, context) -> RelationLoss:
    """Factory of ``relation``: D from ``context.code_dim``, W from ``context.text_encoder``."""
    encoder = getattr(context, "text_encoder", None)
    if encoder is None or getattr(context, "code_dim", None) is None:
        raise ValueError("relation needs the text encoder and the backbone's code dim in the build context")
    return RelationLoss(config, context.code_dim, encoder.width)
