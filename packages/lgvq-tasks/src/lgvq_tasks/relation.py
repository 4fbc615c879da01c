"""``relation``: do codes relate to each other as the words they align with? (Table 4, Fig. 6)

docs/method.md: Evaluation protocols.

For each caption of an image: every word token is matched to the image position whose code-ViT
token is most similar (cosine), giving that position's code index. q = cosines between the word
vectors, p = cosines between the matched codes' codebook entries e_k; the score is the MSE of
p against q over word pairs (pooled over the split). Lower: codes mirror word relations better.
``relation-heatmaps.png`` draws q and p for a few captions, codes labelled by index (Fig. 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.aggregation import MeanMetric

from lgvq_core.api import one_code_per_position
from lgvq_tasks.config import RelationConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.pictures import heatmap, save_png, side_by_side, stacked
from lgvq_tasks.probe import alignment_for
from lgvq_tasks.split import LOCAL_METRIC, caption_features, encode_codes, require_text_encoder, split_batches

#: Word tokens drawn per caption in the heat maps.
HEATMAP_WORDS = 12


def matched_codes(words: torch.Tensor, code_tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """B×L code index at the position whose code-ViT token is most cosine-similar to each word.

    ``words`` B×L×W, ``code_tokens`` B×N×W (code-ViT tokens without the global one), ``indices`` B×N.
    """
    similarity = F.normalize(words.float(), dim=-1) @ F.normalize(code_tokens.float(), dim=-1).transpose(1, 2)  # b l n
    position = similarity.argmax(-1)  # b l
    return indices.gather(1, position)


def relation_matrices(words: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q = cosines between word vectors (B×L×W), p = cosines between code vectors (B×L×D); both B×L×L."""
    w = F.normalize(words.float(), dim=-1)
    c = F.normalize(codes.float(), dim=-1)
    return w @ w.transpose(1, 2), c @ c.transpose(1, 2)


def pair_mask(word_mask: torch.Tensor, pairs: str) -> torch.Tensor:
    """B×L×L word-token pairs that count (diagonal excluded with ``words-offdiag``)."""
    word_mask = word_mask.bool()
    mask = word_mask.unsqueeze(2) & word_mask.unsqueeze(1)
    if pairs == "words-offdiag":
        mask &= ~torch.eye(word_mask.shape[1], dtype=torch.bool, device=word_mask.device)
    return mask


def single_code_indices(indices: torch.Tensor) -> torch.Tensor:
    """B×N code indices (one per position) from B×h×w or B×1×h×w."""
    if indices.dim() == 4 and indices.shape[1] == 1:
        indices = indices[:, 0]
    if indices.dim() != 3:
        raise TaskError(
            f"relation: needs one code per latent position (indices B x h x w), got indices of shape "
            f"{tuple(indices.shape)}; this quantizer picks several codes per position"
        )
    return indices.flatten(1)


class RelationTask:
    name = "relation"

    def __init__(self, config: RelationConfig) -> None:
        self.config = config

    def requires(self, model: Any) -> str | None:
        """Refuse, before any work, a quantizer with several codes per position (``vqct``)."""
        return one_code_per_position(model, self.name)

    @torch.no_grad()
    def run(self, model: Any, data: Any, out_dir: Path) -> dict[str, Any]:
        config = self.config
        require_text_encoder(model, self.name)
        alignment, matcher = alignment_for(model, self.name, config.matcher, None, config.probe)
        codebook = model.tokenizer.quantizer.codebook.detach().float()
        encoder = model.text_encoder
        squared_error = MeanMetric(**LOCAL_METRIC).to(model.device)
        captions_seen = pair_count = 0
        drawn: list[Any] = []
        for batch in split_batches(self.name, data, model, config):
            codes = encode_codes(model.tokenizer, batch.images)
            code_tokens = alignment.code_vit(codes.quant)[:, 1:]  # b n w
            indices = single_code_indices(codes.indices)
            text = caption_features(model, batch.caption)
            if config.word_features == "contextual":
                words = text.token_states
            else:
                words = encoder.embed_ids(text.ids)
            code_ids = matched_codes(words, code_tokens, indices)  # b l
            q, p = relation_matrices(words, codebook[code_ids])
            pairs = pair_mask(text.word_mask, config.pairs)
            if bool(pairs.any()):
                squared_error.update((p - q)[pairs].pow(2).double())
                pair_count += int(pairs.sum())
            captions_seen += len(batch.caption)
            for row in range(len(batch.caption)):
                if len(drawn) >= config.heatmaps:
                    break
                drawn.append(self._heatmaps(text, row, q[row], p[row], code_ids[row], encoder))

        results: dict[str, Any] = {
            "matcher": matcher,
            "mse": float(squared_error.compute()) if pair_count else None,
            "captions": captions_seen,
            "pairs": pair_count,
        }
        if not pair_count:
            print("relation: no caption has two word tokens; the MSE is reported as null", flush=True)
        drawn = [picture for picture in drawn if picture is not None]
        if drawn:
            path = save_png(stacked(drawn), out_dir / "relation-heatmaps.png")
            print(f"relation: wrote {path}", flush=True)
        return results

    def _heatmaps(self, text: Any, row: int, q: torch.Tensor, p: torch.Tensor, code_ids: torch.Tensor, encoder: Any):
        """Word cosines beside the matched codes' cosines for one caption (at most HEATMAP_WORDS words)."""
        positions = text.word_mask[row].nonzero().flatten()[:HEATMAP_WORDS]
        if positions.numel() < 2:
            return None
        tokens = encoder.decode_tokens(text.ids[row].cpu())
        words = [str(tokens[int(i)]) for i in positions]
        codes = [f"code {int(code_ids[i])}" for i in positions]
        grid = positions.unsqueeze(1), positions.unsqueeze(0)
        return side_by_side(
            [heatmap(q[grid], words, "words: cosine"), heatmap(p[grid], codes, "matched codes: cosine")]
        )


def build_relation(config: RelationConfig, context: Any) -> RelationTask:
    return RelationTask(config)
