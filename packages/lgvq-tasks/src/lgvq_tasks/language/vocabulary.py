"""Word vocabularies built from training text: caption/question words and VQA answer classes.

Words are lower-cased and split at anything that is not a letter, digit or apostrophe (punctuation is
dropped), the same rule the caption metrics tokenise with, so a decoded caption is scored on the words
the model could produce. Ids 0-3 are reserved: ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_WORD = re.compile(r"[a-z0-9']+")


def words_of(text: str) -> list[str]:
    """``"A red circle, left."`` -> ``["a", "red", "circle", "left"]``."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string of text, got {type(text).__name__}: {text!r}")
    return _WORD.findall(text.lower())


class WordVocabulary:
    """A fixed list of words with the four special tokens first; encodes text to padded id tensors."""

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if words[: len(SPECIALS)] != list(SPECIALS):
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.index[s] for s in SPECIALS)

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> WordVocabulary:
        """Words of ``texts`` occurring at least ``min_count`` times, most frequent first (ties by spelling)."""
        counts = Counter(word for text in texts for word in words_of(text))
        if not counts:
            raise ValueError("cannot build a vocabulary: the training text has no words")
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str], max_length: int, eos: bool = True) -> torch.Tensor:
        """Texts -> b x T ids (T = the longest, at most ``max_length``), EOS-terminated, right-padded."""
        rows = []
        for text in texts:
            ids = [self.index.get(w, self.unk_id) for w in words_of(text)]
            ids = ids[: max_length - 1] + [self.eos_id] if eos else ids[:max_length]
            rows.append(ids)
        width = max(1, max(len(r) for r in rows))
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Ids up to the first EOS -> words joined by spaces (specials dropped)."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i >= len(self.words) or i < 0:
                raise ValueError(f"token id {i} is outside the vocabulary of {len(self.words)} words")
            if i > self.unk_id:
                words.append(self.words[i])
        return " ".join(words)


class AnswerVocabulary:
    """VQA answer classes: the ``max_answers`` most frequent training answers (whole strings, normalised)."""

    def __init__(self, answers: Sequence[str]) -> None:
        if not answers:
            raise ValueError("an answer vocabulary needs at least one answer")
        if len(set(answers)) != len(answers):
            raise ValueError("answer classes must be unique")
        self.answers = list(answers)
        self.index = {a: i for i, a in enumerate(self.answers)}

    @staticmethod
    def normalise(answer: str) -> str:
        return " ".join(words_of(answer))

    @classmethod
    def from_answers(cls, answers: Iterable[str], max_answers: int) -> AnswerVocabulary:
        counts = Counter(cls.normalise(a) for a in answers)
        counts.pop("", None)
        return cls(sorted(counts, key=lambda a: (-counts[a], a))[:max_answers])

    def __len__(self) -> int:
        return len(self.answers)

    def encode(self, answers: Sequence[str], ignore_index: int = -100) -> torch.Tensor:
        """Answers -> class ids (b); answers outside the vocabulary get ``ignore_index``."""
        return torch.tensor([self.index.get(self.normalise(a), ignore_index) for a in answers], dtype=torch.long)
