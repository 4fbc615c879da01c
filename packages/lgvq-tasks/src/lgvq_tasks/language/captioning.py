"""ClipCap-style captioning on frozen codes (paper Table 11): the visual prefix conditions a causal LM.

Training: the LM reads ``[prefix; caption tokens]`` and the cross-entropy counts caption tokens only:
the logit at position ``P - 1 + t`` predicts caption token ``t``, the caption ends with an explicit EOS,
and prefix positions and padding carry no label. Evaluation decodes captions with the batched, cached
greedy or beam search of :mod:`.decoding`.

Batch keys: ``codes`` (LongTensor b h w, or b k h w) and ``caption`` (list of b strings, one caption
per image: the caption the dataset sampled, as in the runner's batches of cached codes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lgvq_core.api import FrozenTokenizer

from .config import CaptioningConfig
from .decoding import beam_search, greedy_decode
from .prefix import PrefixLanguageModel, texts_of, training_vocabulary
from .vocabulary import WordVocabulary


class CaptioningModel(PrefixLanguageModel):
    """``vocabulary``: words of the training captions (``WordVocabulary.from_texts``); scratch LM only."""

    def __init__(
        self, config: CaptioningConfig, tokenizer: FrozenTokenizer, vocabulary: WordVocabulary | None = None
    ) -> None:
        super().__init__(config, tokenizer, vocabulary)

    def caption_logits(
        self, codes: torch.Tensor, captions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits b T V for each caption token, the target ids b T and their mask b T (real tokens, EOS too)."""
        ids, lengths = self.lm.encode_text(captions, self.max_text_length)
        ids, lengths = ids.to(codes.device), lengths.to(codes.device)
        prefix = self.prefix(codes)  # b P W
        inputs = torch.cat([prefix, self.lm.embed(ids[:, :-1])], dim=1)  # the last token is only a target
        logits, _, _ = self.lm(inputs, None, keep_logits=ids.shape[1])  # b T V: position P-1+t predicts token t
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        return logits, ids, mask

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        codes = batch["codes"]
        captions = texts_of(batch, "caption", codes.shape[0])
        logits, targets, mask = self.caption_logits(codes, captions)
        labels = targets.masked_fill(~mask, -100)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == targets)[mask].float().mean()
        return {"loss": loss, "token_accuracy": accuracy}

    @torch.no_grad()
    def generate(
        self,
        codes: torch.Tensor,
        decoding: str | None = None,
        beam_size: int | None = None,
        max_length: int | None = None,
    ) -> list[str]:
        """Captions of a batch of codes (eval mode for the call; the config's decoding unless given)."""
        decoding = decoding or self.config.decoding
        beams = beam_size or self.config.beam_size
        max_length = max_length or self.max_text_length
        was_training = self.training
        self.eval()
        try:
            prefix = self.prefix(codes)
            if decoding == "greedy":
                ids = greedy_decode(self.lm, prefix, max_length)
            elif decoding == "beam":
                ids = beam_search(self.lm, prefix, beams, max_length, self.config.length_penalty)
            else:
                raise ValueError(f"decoding must be 'greedy' or 'beam', got {decoding!r}")
        finally:
            self.train(was_training)
        return [self.lm.decode_text(row) for row in ids]


def build_captioning(config: CaptioningConfig, context) -> CaptioningModel:
    """Factory of the ``captioning`` downstream model: the word vocabulary of the training captions."""
    vocabulary = training_vocabulary(config, context.train_captions())
    return CaptioningModel(config, context.frozen_tokenizer, vocabulary)
