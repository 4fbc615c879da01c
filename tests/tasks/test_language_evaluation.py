"""Evaluation loops: scores over batches, the shuffled-image control, the grounding picture."""

from __future__ import annotations

import pytest
import torch
from language_doubles import CAPTIONS, distinct_codes, fit, frozen_tokenizer

from lgvq_tasks.language.captioning import CaptioningModel
from lgvq_tasks.language.config import CaptioningConfig, GroundingConfig, LanguageModelConfig, VQAConfig
from lgvq_tasks.language.evaluation import (
    QuestionOnly,
    constant_box_baseline,
    evaluate_captioning,
    evaluate_grounding,
    evaluate_vqa,
    most_frequent_caption_baseline,
    shuffled_codes,
)
from lgvq_tasks.language.grounding import GroundingModel
from lgvq_tasks.language.vocabulary import AnswerVocabulary, WordVocabulary
from lgvq_tasks.language.vqa import VQAModel

LM = LanguageModelConfig(width=32, layers=2, heads=2, dropout=0.0, max_text_length=12)


def test_shuffled_codes_move_every_image():
    codes = torch.arange(6)[:, None, None].expand(6, 2, 2)
    for seed in range(5):
        moved = shuffled_codes(codes, torch.Generator().manual_seed(seed))
        assert sorted(moved[:, 0, 0].tolist()) == list(range(6))
        assert (moved[:, 0, 0] != torch.arange(6)).all()


def test_captioning_evaluation_scores_the_decoded_captions_and_the_control_is_worse():
    tokenizer = frozen_tokenizer()
    model = CaptioningModel(CaptioningConfig(language_model=LM), tokenizer, WordVocabulary.from_texts(CAPTIONS))
    codes = distinct_codes(4, tokenizer)
    fit(model, {"codes": codes, "caption": CAPTIONS}, steps=150)
    batches = [
        {"codes": codes[:2], "captions": [[c] for c in CAPTIONS[:2]]},
        {"codes": codes[2:], "captions": [[c] for c in CAPTIONS[2:]]},
    ]
    result = evaluate_captioning(model, batches, decoding="greedy", meteor=False)
    assert result["bleu4"] == pytest.approx(1.0, abs=1e-6) and result["cider_d"] == pytest.approx(10.0)
    assert result["images"] == 4 and result["examples"][0]["caption"] == CAPTIONS[0]
    assert result["shuffled_images"]["cider_d"] < 5.0
    with pytest.raises(ValueError, match="batch\\['captions'\\]"):
        evaluate_captioning(model, [{"codes": codes, "caption": CAPTIONS}], meteor=False)


def colour_vqa() -> tuple[VQAModel, dict]:
    """A VQA model fitted to four images that differ in their colour answer, and its batch."""
    tokenizer = frozen_tokenizer()
    colours = ["red", "blue", "green", "yellow"]
    vocabulary = WordVocabulary.from_texts(["what colour"])
    model = VQAModel(VQAConfig(language_model=LM), tokenizer, AnswerVocabulary(colours), vocabulary)
    codes = distinct_codes(4, tokenizer)
    batch = {"codes": codes, "question": ["what colour"] * 4, "answer": colours, "question_type": ["color"] * 4}
    fit(model, batch, steps=80)
    return model, batch


def test_vqa_evaluation_reports_types_and_the_control(tmp_path):
    model, batch = colour_vqa()
    result = evaluate_vqa(model, [batch], wordnet=tmp_path / "corpora" / "wordnet")  # no WordNet there
    assert result["accuracy"] == 1.0 and result["per_type"]["color"]["questions"] == 4
    assert str(result["wups@0.9"]).startswith("unavailable")
    assert result["shuffled_images"]["accuracy"] == 0.0  # every image now carries codes of another colour
    assert result["examples"][1] == {"question": "what colour", "answer": "blue", "truth": "blue"}


def test_grounding_evaluation_scores_and_draws(tmp_path):
    tokenizer = frozen_tokenizer()
    model = GroundingModel(GroundingConfig(width=32, layers=1, heads=2, picture_samples=3), tokenizer, text_width=6)
    codes = distinct_codes(4, tokenizer)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5]]).repeat(4, 1)
    batch = {
        "codes": codes,
        "text_states": torch.randn(4, 3, 6),
        "text_pad": torch.ones(4, 3, dtype=torch.bool),
        "boxes": boxes,
        "expression": ["the thing"] * 4,
    }
    fit(model, batch, steps=60)
    result = evaluate_grounding(model, [batch, batch], picture=tmp_path / "grounding.png")
    assert result["expressions"] == 8 and result["acc@0.5"] == 1.0
    from PIL import Image

    assert Image.open(result["picture"]).height > 3 * 192  # three samples stacked


def test_with_several_questions_per_image_the_control_never_meets_its_own_image(tmp_path):
    # two images, two questions each, in image order as a question split walks them: a permutation
    # within the batch can give a question its own image's codes; the split's partner codes cannot
    tokenizer = frozen_tokenizer()
    colours = ["red", "blue"]
    vocabulary = WordVocabulary.from_texts(["what colour"])
    model = VQAModel(VQAConfig(language_model=LM), tokenizer, AnswerVocabulary(colours), vocabulary)
    codes = distinct_codes(2, tokenizer)
    train = {"codes": codes, "question": ["what colour"] * 2, "answer": colours, "question_type": ["color"] * 2}
    fit(model, train, steps=80)
    batch = {
        "codes": codes[[0, 0, 1, 1]],
        "question": ["what colour"] * 4,
        "answer": ["red", "red", "blue", "blue"],
        "question_type": ["color"] * 4,
        "shuffled_codes": codes[[1, 1, 0, 0]],  # each image's partner: the other one
    }
    result = evaluate_vqa(model, [batch], wordnet=tmp_path / "none")
    assert result["accuracy"] == 1.0 and result["shuffled_images"]["accuracy"] == 0.0
    permuted = evaluate_vqa(model, [{k: v for k, v in batch.items() if k != "shuffled_codes"}], wordnet=tmp_path / "x")
    assert permuted["shuffled_images"]["accuracy"] > 0.0  # the within-batch permutation leaks the own image


def test_grounding_scores_the_shuffled_control_when_the_batches_carry_it():
    torch.manual_seed(0)  # the head's start must not depend on which tests ran before
    tokenizer = frozen_tokenizer()
    model = GroundingModel(GroundingConfig(width=32, layers=1, heads=2, picture_samples=0), tokenizer, text_width=6)
    codes = distinct_codes(2, tokenizer)
    boxes = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]])
    batch = {
        "codes": codes,
        "text_states": torch.zeros(2, 3, 6),
        "text_pad": torch.ones(2, 3, dtype=torch.bool),
        "boxes": boxes,
    }
    fit(model, batch, steps=300)
    result = evaluate_grounding(model, [{**batch, "shuffled_codes": codes.flip(0)}])
    assert result["acc@0.5"] == 1.0 and result["shuffled_images"]["acc@0.5"] == 0.0  # the box follows the image
    assert "shuffled_images" not in evaluate_grounding(model, [batch])


def test_the_question_only_baseline_answers_with_the_most_frequent_training_answer():
    training = [
        ("What colour is the circle?", "red", "color"),
        ("what colour is the circle", "red", "color"),
        ("what colour is the circle?", "blue", "color"),
        ("what colour is the square?", "green", "color"),
        ("what colour is the square?", "blue", "color"),  # a tie: the alphabetically first answer
        ("how many shapes are there?", "two", "number"),
        ("how many circles are there?", "one", "number"),
        ("how many circles are there?", "one", "number"),
        ("how many squares are there?", "one", "number"),
    ]
    blind = QuestionOnly(training)
    assert blind("what  colour is the CIRCLE?", "color") == "red"  # same words up to case, spaces and punctuation
    assert blind("what colour is the square?", "color") == "blue"
    assert blind("what colour is the star?", "color") == "blue"  # never seen: its type's answer (blue 2, red 2)
    assert blind("where is the star?", "location") == "one"  # unknown type: the overall answer (one 3, blue 2, red 2)
    by_type = QuestionOnly(training, by_question=False)  # the answer prior of the question type alone
    assert by_type("what colour is the circle?", "color") == "blue" and by_type("how many?", "number") == "one"
    with pytest.raises(ValueError, match="training questions"):
        QuestionOnly([])


def test_vqa_evaluation_scores_the_question_only_baseline_beside_the_model(tmp_path):
    model, batch = colour_vqa()
    blind = QuestionOnly(
        [("what colour", "red", "color"), ("what colour", "red", "color"), ("what colour", "blue", "color")]
    )
    result = evaluate_vqa(model, [batch], wordnet=tmp_path / "none", question_only=blind)
    assert result["accuracy"] == 1.0
    assert result["question_only"]["accuracy"] == 0.25  # "red" to every question: right once in four
    assert result["question_only"]["per_type"]["color"]["questions"] == 4
    assert "question_only" not in evaluate_vqa(model, [batch], wordnet=tmp_path / "none")


def test_the_constant_box_baseline_scores_the_mean_training_box():
    train = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.2, 0.2, 0.6, 0.6]])  # mean (0.1, 0.1, 0.5, 0.5)
    val = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]])  # the first is the mean box, the second misses it
    result = constant_box_baseline(train, val)
    assert result["box"] == [0.1, 0.1, 0.5, 0.5]
    assert result["acc@0.5"] == 0.5 and result["mean_iou"] == pytest.approx((1.0 + 0.0) / 2)


def test_the_most_frequent_caption_baseline_says_one_caption_for_every_image():
    train = ["a red circle", "A red  circle", "a blue square"]
    references = [["a red circle"], ["a blue square"]]
    result = most_frequent_caption_baseline(train, references)
    assert result["caption"] == "a red circle" and result["images"] == 2
    assert 0 < result["bleu4"] < 1 and result["meteor"] == "not requested"


def test_a_number_that_could_not_be_computed_keeps_its_row_with_the_reason():
    from lgvq_core.runner.evaluate import format_table

    table = format_table({"vqa-scores": {"accuracy": 0.5, "wups@0.9": "unavailable: no WordNet here", "x": "text"}})
    assert "wups@0.9  unavailable: no WordNet here" in table and "accuracy" in table and " x " not in table


def test_check_warns_that_wups_needs_wordnet(monkeypatch):
    from lgvq_core.wordnet import WordNetUnavailable
    from lgvq_tasks.language.config import VQAScoresConfig

    def missing():
        raise WordNetUnavailable("install it with apt-get install wordnet-base")

    monkeypatch.setattr("lgvq_core.wordnet.prepare_wordnet", missing)
    assert VQAScoresConfig().machine_warnings() == [
        "WUPS will be reported unavailable: install it with apt-get install wordnet-base"
    ]
