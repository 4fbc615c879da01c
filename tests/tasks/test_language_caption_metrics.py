"""Caption metrics through pycocoevalcap: maxima for identical captions, absence reported, bad input."""

from __future__ import annotations

import shutil

import pytest

from lgvq_tasks.language import caption_metrics
from lgvq_tasks.language.caption_metrics import caption_scores

CAPTIONS = ["a red circle on the left", "two blue squares below a line", "a small green triangle near the top"]


def test_identical_candidates_score_the_known_maxima():
    scores = caption_scores(CAPTIONS, [[c] for c in CAPTIONS], meteor=False)
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["cider_d"] == pytest.approx(10.0)  # coco-caption's CIDEr-D scale (x10)
    assert scores["cider_images"] == 3 and scores["meteor"] == "not requested"


def test_punctuation_and_case_do_not_count():
    scores = caption_scores(["A red circle, on the LEFT."], [["a red circle on the left"]], meteor=False)
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)


def test_unrelated_candidates_score_low():
    scores = caption_scores(["zebra", "zebra", "zebra"], [[c] for c in CAPTIONS], meteor=False)
    assert scores["bleu4"] < 1e-6 and scores["rouge_l"] == 0.0 and scores["cider_d"] == 0.0


def test_meteor_without_java_is_reported_absent_not_zero(monkeypatch):
    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    scores = caption_scores(CAPTIONS, [[c] for c in CAPTIONS])
    assert scores["meteor"].startswith("absent") and "Java" in scores["meteor"]


@pytest.mark.slow  # starts the METEOR 1.5 jar: about 20 s on a busy 2-core CPU
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR runs under Java")
def test_meteor_of_identical_captions_is_near_one():
    assert caption_scores(CAPTIONS, [[c] for c in CAPTIONS])["meteor"] > 0.95


def test_bad_references_are_named():
    with pytest.raises(ValueError, match=r"references\[1\]"):
        caption_scores(["a", "b"], [["a"], "b"])
    with pytest.raises(ValueError, match="2 candidate captions for 1"):
        caption_scores(["a", "b"], [["a"]])
