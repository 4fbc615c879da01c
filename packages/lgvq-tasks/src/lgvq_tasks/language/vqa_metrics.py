"""VQA scores: exact-match accuracy and WUPS, overall and per question type (COCO-QA: object, number,
color, location)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lgvq_core.api import WordNetUnavailable

from .vocabulary import AnswerVocabulary
from .wups import WupsScorer, unavailable_scores, wups_scores


def vqa_scores(
    predicted: Sequence[str],
    truth: Sequence[str],
    question_types: Sequence[str] | None,
    wordnet: Any = None,
    thresholds: Sequence[float] = (0.9, 0.0),
) -> dict[str, Any]:
    """``{"accuracy", "wups@0.9", "wups@0.0", "questions", "per_type": {type: same keys}}``, values in [0, 1].

    Answers are compared after normalisation (lower-case words). ``wordnet``: an nltk WordNet reader,
    its folder, or None for the system's WordNet (:mod:`lgvq_core.wordnet`); without WordNet the WUPS
    keys hold an "unavailable: ..." note, and accuracy is still computed.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted answers for {len(truth)} questions")
    if not truth:
        raise ValueError("no questions to score")
    if question_types is not None and len(question_types) != len(truth):
        raise ValueError(f"{len(question_types)} question types for {len(truth)} questions")
    try:
        wups: WupsScorer | WordNetUnavailable = WupsScorer(wordnet)  # one reader and cache for every subset
    except WordNetUnavailable as error:
        wups = error
    predicted = [AnswerVocabulary.normalise(a) for a in predicted]
    truth = [AnswerVocabulary.normalise(a) for a in truth]

    def scores(indices: list[int]) -> dict[str, Any]:
        p, t = [predicted[i] for i in indices], [truth[i] for i in indices]
        result: dict[str, Any] = {
            "questions": len(indices),
            "accuracy": sum(a == b for a, b in zip(p, t, strict=True)) / len(t),
        }
        if isinstance(wups, WupsScorer):
            result.update(wups_scores(p, t, thresholds, wups))
        else:
            result.update(unavailable_scores(thresholds, wups))
        return result

    overall = scores(list(range(len(truth))))
    if question_types is not None:
        overall["per_type"] = {
            kind: scores([i for i, k in enumerate(question_types) if k == kind]) for kind in sorted(set(question_types))
        }
    return overall
