"""``masked-words``: masked word prediction from the codes (docs/method.md: Evaluation protocols, the paper's Table 3).

Mask-k hides k distinct random word tokens among the first min(n, 28) word tokens of a caption
(captions with fewer than k such tokens are skipped); the masked-text head predicts them from the
rest of the caption and the image's code-ViT tokens. Recall@1 = the fraction of masked tokens
whose top-1 prediction is exactly the hidden token.

Two protocols, computed on the same masks:

- ``leak-free``: the text encoder reads the MASKED caption (masked ids replaced by its mask
  placeholder), so no visible feature has seen a hidden word: the honest number. A head trained
  on embedding-layer rows (``text_input = "token-embedding"``) gets those rows instead, which are
  leak-free by construction.
- ``official``: the visible rows are the contextual features of the UNMASKED caption, as in the
  official code and Table 3. Every visible token of a bidirectional encoder, and every later
  token and EOT of a causal one, has attended to the hidden word: the answer leaks.

The shuffled-image control predicts with the codes of another image (each caption gets the
previous image of the split): if the recall hardly drops, the prediction does not use the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchmetrics.aggregation import MeanMetric, SumMetric

from lgvq_core.api import encode_masked
from lgvq_tasks.config import MaskedWordsConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.probe import alignment_for
from lgvq_tasks.split import LOCAL_METRIC, caption_features, encode_codes, require_text_encoder, split_batches


def choose_masks(
    word_mask: torch.Tensor, count: int, max_position: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """B×L masked tokens and B eligible captions: ``count`` distinct word tokens among the first ``max_position``.

    A caption with fewer than ``count`` such tokens is not eligible and gets no mask.
    """
    word_mask = word_mask.bool().cpu()
    rank = word_mask.long().cumsum(1)  # 1-based rank of each word token
    candidates = word_mask & (rank <= max_position)
    eligible = candidates.sum(1) >= count
    scores = torch.rand(word_mask.shape, generator=generator)
    scores = torch.where(candidates, scores, torch.full_like(scores, -1.0))
    chosen = scores.topk(min(count, word_mask.shape[1]), dim=1).indices
    masked = torch.zeros_like(word_mask).scatter(1, chosen, True) & candidates & eligible.unsqueeze(1)
    return masked, eligible


def masked_text_head(alignment: Any) -> Any:
    head = alignment.losses["masked-text"] if "masked-text" in alignment.losses else None
    if head is None:
        raise TaskError("masked-words: the alignment module has no masked-text head")
    return head


def visible_rows(head: Any, protocol: str, text: Any, masked: torch.Tensor, encoder: Any) -> torch.Tensor:
    """B×L×W decoder rows of the visible tokens under ``protocol`` (masked rows are replaced later)."""
    if protocol == "official":
        return text.token_states
    if head.config.text_input == "token-embedding":
        return encoder.embed_ids(text.ids)
    return encode_masked(encoder, text, masked)


def masked_predictions(
    head: Any, vit_tokens: torch.Tensor, rows: torch.Tensor, masked: torch.Tensor, pad_mask: torch.Tensor, encoder: Any
) -> torch.Tensor:
    """Top-1 token id at each masked position (flattened in row-major order), from the masked-text head.

    ``vit_tokens`` B×(N+1)×W are the code-ViT tokens the decoder cross-attends to. The decoder input
    is built as in training (:meth:`MaskedTextLoss.decoder_rows`: the in-projection of a narrower
    decoder, the learned mask embeddings at masked rows, zero padding rows), and the decoder treats
    padding rows as the head was trained to (its ``attend_padding``; the official default attends to
    them). A head restricted to the training captions' tokens (``vocabulary = "captions"``) predicts
    among those; its columns are mapped back to token ids.
    """
    pad = pad_mask.bool()
    hidden = head.decoder_rows(rows, masked, pad)  # b l d
    hidden = head.decode(hidden, vit_tokens, pad)  # b l' d (l' < l only when padding is masked)
    logits = head.head(hidden[masked[:, : hidden.shape[1]]], encoder.token_embedding)  # m v (or m k)
    to_token_ids = getattr(head.head, "token_ids", None)
    return logits.argmax(-1) if to_token_ids is None else to_token_ids(logits.argmax(-1))


class MaskedWordsTask:
    name = "masked-words"

    def __init__(self, config: MaskedWordsConfig) -> None:
        self.config = config

    @torch.no_grad()
    def run(self, model: Any, data: Any, out_dir: Path) -> dict[str, Any]:
        config = self.config
        require_text_encoder(model, self.name)
        alignment, matcher = alignment_for(model, self.name, config.matcher, "masked-text", config.probe)
        head = masked_text_head(alignment)
        encoder = model.text_encoder
        generator = torch.Generator().manual_seed(config.seed)
        counts = list(dict.fromkeys(config.mask_counts))
        protocols = list(dict.fromkeys(config.protocols))
        controls = ["image", "shuffled"] if config.shuffled_control else ["image"]
        recall = {
            (p, k, c): MeanMetric(nan_strategy="ignore", **LOCAL_METRIC).to(model.device)
            for p in protocols
            for k in counts
            for c in controls
        }
        captions_used = {k: SumMetric(**LOCAL_METRIC).to(model.device) for k in counts}
        carry = None
        for batch in split_batches(self.name, data, model, config):
            codes = encode_codes(model.tokenizer, batch.images)
            vit = alignment.code_vit(codes.quant)  # b (1+n) w
            # the control: each image's captions meet the previous image's codes
            previous = vit[-1:] if carry is None else carry
            shuffled = torch.cat([previous, vit[:-1]])
            carry = vit[-1:]
            if config.all_captions:
                owner = [i for i, captions in enumerate(batch.captions) for _ in captions]
                captions = [c for group in batch.captions for c in group]
            else:
                owner, captions = list(range(len(batch.caption))), batch.caption
            owner_index = torch.tensor(owner, device=vit.device)
            sources = {"image": vit[owner_index], "shuffled": shuffled[owner_index]}
            text = caption_features(model, captions)
            for k in counts:
                masked, eligible = choose_masks(text.word_mask, k, config.max_position, generator)
                captions_used[k].update(eligible.sum().double())
                if not bool(eligible.any()):
                    continue
                masked = masked.to(text.ids.device)
                targets = text.ids[masked]
                for protocol in protocols:
                    rows = visible_rows(head, protocol, text, masked, encoder)
                    for control in controls:
                        predicted = masked_predictions(head, sources[control], rows, masked, text.pad_mask, encoder)
                        recall[(protocol, k, control)].update((predicted == targets).double())

        results: dict[str, Any] = {"matcher": matcher}
        for protocol in protocols:
            block: dict[str, Any] = {}
            for k in counts:
                used = int(captions_used[k].compute())
                entry: dict[str, Any] = {"captions": used, "tokens": used * k}
                for control in controls:
                    key = "recall@1" if control == "image" else "shuffled_recall@1"
                    entry[key] = float(recall[(protocol, k, control)].compute()) if used else None
                block[f"mask-{k}"] = entry
            results[protocol] = block
        for k in counts:
            if results[protocols[0]][f"mask-{k}"]["captions"] == 0:
                print(f"masked-words: no caption has {k} word tokens to mask; Mask-{k} is reported as null", flush=True)
        return results


def build_masked_words(config: MaskedWordsConfig, context: Any) -> MaskedWordsTask:
    return MaskedWordsTask(config)
