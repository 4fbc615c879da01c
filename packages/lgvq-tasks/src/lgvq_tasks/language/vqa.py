"""VQA on frozen codes as answer classification (paper Tables 9, 13).

``[prefix; question tokens; EOS]`` runs through the causal decoder of captioning; the hidden state at
the last real position (the question's EOS, which has attended to the image and every question word)
goes through a linear layer over the answer vocabulary. The paper feeds "the captioning model's last
hidden state" to the classifier: ``init_from`` starts the visual mapping and the decoder from a
captioning checkpoint (its word vocabulary comes along), otherwise they start fresh.

Batch keys: ``codes`` (LongTensor b h w, or b k h w), ``question`` (list of b strings, one question
per item) and, for training, ``answer`` (list of b strings; answers outside the answer vocabulary carry
no loss). Scoring (:mod:`.vqa_metrics`) also takes each question's type (``Question.type``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.api import FrozenTokenizer

from .config import VQAConfig
from .language_model import vocabulary_from_state_dict
from .prefix import PrefixLanguageModel, texts_of, training_vocabulary
from .vocabulary import AnswerVocabulary, WordVocabulary

_SHARED = ("visual.", "mapper.", "lm.")
_TOKENIZER_OWN = ("visual.codebook",)  # always this tokenizer's frozen codebook, never the checkpoint's


def load_captioning_state(path: str | Path) -> dict:
    """The model state dict of a captioning model: a downstream run directory (its ``best``
    checkpoint), a checkpoint directory, or a torch file (plain, or under ``'model'``)."""
    path = Path(path)
    if path.is_dir():
        from lgvq_core.api import read_checkpoint

        # a run directory (its best checkpoint) or one checkpoint directory, verified against its manifest
        read = read_checkpoint(path, "best") if (path / "checkpoints").is_dir() else read_checkpoint(path, str(path))
        folder = read.path
        state = read.weights("downstream")
        if not any(k.startswith("lm.") for k in state):
            raise ValueError(f"{folder} holds no captioning model (no 'downstream.lm.' weights)")
        return state
    if not path.is_file():
        raise FileNotFoundError(f"vqa init_from {str(path)!r} does not exist: give a captioning checkpoint file")
    try:  # weights_only: tensors and containers only; a pickle that would run code is refused unexecuted
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"vqa init_from {str(path)!r} is not a plain checkpoint of tensors (refused, nothing run): {error}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not any(k.startswith("lm.") for k in state):
        raise ValueError(f"{str(path)!r} holds no captioning model state (no 'lm.' keys)")
    return state


class VQAModel(PrefixLanguageModel):
    """``answers``: the answer classes (``AnswerVocabulary.from_answers``); ``vocabulary``: question words
    (scratch LM without ``init_from``: ``WordVocabulary.from_texts(train questions)``)."""

    def __init__(
        self,
        config: VQAConfig,
        tokenizer: FrozenTokenizer,
        answers: AnswerVocabulary,
        vocabulary: WordVocabulary | None = None,
    ) -> None:
        captioning_state = None
        if config.init_from:
            captioning_state = load_captioning_state(config.init_from)
            vocabulary = vocabulary_from_state_dict(captioning_state) or vocabulary
        super().__init__(config, tokenizer, vocabulary)
        self.answers = answers
        self.classifier = nn.Linear(self.lm.width, len(answers))
        if captioning_state is not None:
            self.initialise_from_captioning(captioning_state)

    def initialise_from_captioning(self, state: dict) -> None:
        """Copy the visual position embedding, mapper and decoder of a captioning model (strictly)."""
        shared = {k: v for k, v in state.items() if k.startswith(_SHARED) and k not in _TOKENIZER_OWN}
        own = {k for k in self.state_dict() if k.startswith(_SHARED) and k not in _TOKENIZER_OWN}
        missing, unexpected = sorted(own - set(shared)), sorted(set(shared) - own)
        if missing or unexpected:
            raise ValueError(
                "the captioning checkpoint does not match this VQA model (same visual, prefix_mapper and "
                f"language_model options needed): missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.load_state_dict(shared, strict=False)

    def answer_logits(self, codes: torch.Tensor, questions: list[str]) -> torch.Tensor:
        ids, lengths = self.lm.encode_text(questions, self.max_text_length)
        ids, lengths = ids.to(codes.device), lengths.to(codes.device)
        prefix = self.prefix(codes)  # b P W
        _, hidden, _ = self.lm(torch.cat([prefix, self.lm.embed(ids)], dim=1), None, keep_logits=1)  # b (P+T) W
        last = prefix.shape[1] + lengths - 1  # the question's EOS
        state = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # b W
        return self.classifier(state)  # b A

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        codes = batch["codes"]
        questions = texts_of(batch, "question", codes.shape[0])
        targets = self.answers.encode(texts_of(batch, "answer", codes.shape[0])).to(codes.device)
        logits = self.answer_logits(codes, questions)
        known = targets != -100
        if not bool(known.any()):
            loss = logits.sum() * 0.0  # no answer of this batch is a class: nothing to learn, keep the graph
        else:
            loss = F.cross_entropy(logits.float(), targets, ignore_index=-100)
        with torch.no_grad():
            accuracy = (
                (logits.argmax(-1) == targets)[known].float().mean()
                if bool(known.any())
                else logits.new_full((), float("nan"))
            )
        return {"loss": loss, "answer_accuracy": accuracy}

    @torch.no_grad()
    def predict(self, codes: torch.Tensor, questions: list[str]) -> list[str]:
        """The top answer for each question (eval mode for the call)."""
        was_training = self.training
        self.eval()
        try:
            best = self.answer_logits(codes, questions).argmax(-1).tolist()
        finally:
            self.train(was_training)
        return [self.answers.answers[i] for i in best]


def build_vqa(config: VQAConfig, context) -> VQAModel:
    """Factory of the ``vqa`` downstream model: answer classes and question words from the training split."""
    images = context.train_data.images
    questions = [question for image in range(len(images)) for question in images.questions(image)]
    answers = AnswerVocabulary.from_answers([q.answer for q in questions], config.max_answers)
    vocabulary = training_vocabulary(config, [q.text for q in questions])
    return VQAModel(config, context.frozen_tokenizer, answers, vocabulary)
