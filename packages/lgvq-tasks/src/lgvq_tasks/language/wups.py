"""WUPS: the Wu-Palmer-based set similarity of VQA answers (Malinowski & Fritz, NIPS 2014).

For a predicted answer A and a true answer T (each a set of words)::

    WUPS = min( prod_{a in A} max_{t in T} mu(a, t),  prod_{t in T} max_{a in A} mu(a, t) )
    mu(a, t) = 1 if a == t, else  w = max over noun synsets (s_a, s_t) of WuPalmer(s_a, s_t),
               w if w >= threshold else 0.1 * w  (0 when a word has no noun synset)

averaged over questions (x 100 in tables). WUPS@0.9 scales down everything short of near-synonyms;
WUPS@0.0 keeps the raw Wu-Palmer similarity (COCO-QA reports both; the paper's values fit @0.0).

WordNet is read through nltk's ``WordNetCorpusReader``: a reader or folder from the caller, else the
system's WordNet found by :mod:`lgvq_core.wordnet` (Debian's ``wordnet-base`` and
``wordnet-sense-index``); nothing is downloaded. Without WordNet, :func:`wups_scores` reports WUPS as
unavailable with the install hint; it never reports a zero it did not compute.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lgvq_core.api import WORDNET_INSTALL_HINT as INSTALL_HINT
from lgvq_core.api import WordNetUnavailable, load_wordnet

from .vocabulary import words_of


def open_wordnet(source: Any = None) -> Any:
    """An nltk WordNet reader: ``source`` itself when it is one, the ``<root>/corpora/wordnet`` folder
    ``source`` names, or (``None``) the system's WordNet through :func:`lgvq_core.wordnet.load_wordnet`.

    A folder holds WordNet 3.0's ``data.*``, ``index.*``, ``*.exc``, ``index.sense`` and ``lexnames``
    (nltk's layout, as :func:`lgvq_core.wordnet.build_layout` writes it). nltk only reads folders under
    its data path and looks the corpus up there by name, so ``<root>`` is added to ``nltk.data.path``.
    Raises :class:`~lgvq_core.wordnet.WordNetUnavailable` with the install hint.
    """
    if source is None:
        return load_wordnet()
    if hasattr(source, "synsets"):
        return source
    folder = Path(source).resolve()
    missing = [
        n for n in ("data.noun", "index.noun", "noun.exc", "index.sense", "lexnames") if not (folder / n).is_file()
    ]
    if missing:
        raise WordNetUnavailable(f"WordNet folder {str(folder)!r} lacks {missing}. {INSTALL_HINT}")
    if folder.parent.name != "corpora":
        raise WordNetUnavailable(f"WordNet folder {str(folder)!r} must be <root>/corpora/wordnet (nltk's layout)")
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = str(folder.parent.parent)
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return WordNetCorpusReader(str(folder), None)


class WupsScorer:
    """Word and answer similarities over one WordNet, with the noun synsets of each word cached."""

    def __init__(self, wordnet: Any = None) -> None:
        self.wordnet = open_wordnet(wordnet)
        self._synsets = lru_cache(maxsize=None)(self._noun_synsets)
        self._pair = lru_cache(maxsize=None)(self._best_wu_palmer)

    def _noun_synsets(self, word: str) -> tuple:
        return tuple(self.wordnet.synsets(word, pos="n"))

    def _best_wu_palmer(self, a: str, b: str) -> float:
        best = 0.0
        for x in self._synsets(a):
            for y in self._synsets(b):
                best = max(best, x.wup_similarity(y) or 0.0)
        return best

    def wu_palmer(self, a: str, b: str) -> float:
        """Best Wu-Palmer similarity over the noun synsets of two words (1 for the same word)."""
        if a == b:
            return 1.0
        return self._pair(*sorted((a, b)))

    def word_similarity(self, a: str, b: str, threshold: float) -> float:
        """mu(a, b): the Wu-Palmer similarity, scaled by 0.1 below ``threshold``."""
        similarity = self.wu_palmer(a, b)
        return similarity if similarity >= threshold else 0.1 * similarity

    def answer_similarity(self, predicted: str, truth: str, threshold: float) -> float:
        """WUPS of one answer pair; multi-word answers are word sets (a product over words, both ways)."""
        a, t = words_of(predicted), words_of(truth)
        if not a or not t:
            return float(a == t)
        forward = math.prod(max(self.word_similarity(x, y, threshold) for y in t) for x in a)
        backward = math.prod(max(self.word_similarity(x, y, threshold) for x in a) for y in t)
        return min(forward, backward)

    def score(self, predicted: Sequence[str], truth: Sequence[str], threshold: float) -> float:
        """Mean WUPS over question pairs, in [0, 1]."""
        if len(predicted) != len(truth):
            raise ValueError(f"{len(predicted)} predicted answers for {len(truth)} true answers")
        if not truth:
            raise ValueError("WUPS of no answers is undefined")
        return sum(self.answer_similarity(p, t, threshold) for p, t in zip(predicted, truth, strict=True)) / len(truth)


def unavailable_scores(thresholds: Sequence[float], error: Exception) -> dict[str, str]:
    """Each WUPS key mapped to the note saying why it was not computed (and how to install WordNet)."""
    return {wups_key(t): f"unavailable: {error}" for t in thresholds}


def wups_key(threshold: float) -> str:
    return f"wups@{float(threshold)!r}"


def wups_scores(
    predicted: Sequence[str], truth: Sequence[str], thresholds: Sequence[float], wordnet: Any = None
) -> dict[str, float | str]:
    """``{"wups@0.9": ..., "wups@0.0": ...}`` in [0, 1], or each key mapped to the unavailability note.

    ``wordnet``: a :class:`WupsScorer` (reused, with its cache), or what :func:`open_wordnet` takes.
    """
    try:
        scorer = wordnet if isinstance(wordnet, WupsScorer) else WupsScorer(wordnet)
    except WordNetUnavailable as error:
        return unavailable_scores(thresholds, error)
    return {wups_key(t): scorer.score(predicted, truth, t) for t in thresholds}
