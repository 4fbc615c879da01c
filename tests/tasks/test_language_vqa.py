"""VQA on frozen codes: the answer classifier, initialisation from captioning, accuracy and WUPS."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from language_doubles import CAPTIONS, distinct_codes, fit, frozen_tokenizer

from lgvq_core.wordnet import WordNetUnavailable, build_layout, system_wordnet_dir
from lgvq_tasks.language import wups as wups_module
from lgvq_tasks.language.captioning import CaptioningModel
from lgvq_tasks.language.config import CaptioningConfig, LanguageModelConfig, VQAConfig
from lgvq_tasks.language.vocabulary import AnswerVocabulary, WordVocabulary
from lgvq_tasks.language.vqa import VQAModel
from lgvq_tasks.language.vqa_metrics import vqa_scores
from lgvq_tasks.language.wups import WupsScorer, wups_scores

COLOURS = ["red", "blue", "green", "yellow"]


@pytest.fixture(scope="session")
def wordnet_folder(tmp_path_factory) -> Path:
    """nltk's ``corpora/wordnet`` layout assembled in a temporary folder from the system's WordNet files
    (Debian's wordnet-base and wordnet-sense-index)."""
    source = system_wordnet_dir()
    if source is None or not (source / "index.sense").is_file():
        pytest.skip("WordNet absent: apt-get install wordnet-base wordnet-sense-index")
    return build_layout(source, tmp_path_factory.mktemp("nltk_data"))


@pytest.fixture(scope="session")
def wordnet(wordnet_folder):
    return WupsScorer(wordnet_folder).wordnet


def test_wu_palmer_of_hand_picked_pairs_matches_published_values(wordnet):
    scorer = WupsScorer(wordnet)
    assert scorer.wu_palmer("dog", "cat") == pytest.approx(0.857, abs=5e-4)  # nltk's documented example
    assert scorer.wu_palmer("car", "automobile") == 1.0  # one synset
    assert scorer.wu_palmer("horse", "zebra") == pytest.approx(14 / 15)  # nltk on WordNet 3.0
    assert scorer.wu_palmer("circles", "circle") == 1.0  # plural through the exception/morphy rules
    assert scorer.wu_palmer("xyzzy", "dog") == 0.0  # no synset: no similarity


def test_wups_scales_pairs_below_the_threshold_by_a_tenth(wordnet):
    scorer = WupsScorer(wordnet)
    assert scorer.word_similarity("dog", "cat", 0.9) == pytest.approx(0.0857, abs=5e-5)
    assert scorer.word_similarity("dog", "cat", 0.0) == pytest.approx(0.857, abs=5e-4)
    # multi-word: min of the two directional products; "red ball" vs "red" is limited by "ball"
    ball_red = scorer.word_similarity("ball", "red", 0.9)
    assert scorer.answer_similarity("red ball", "red", 0.9) == pytest.approx(ball_red)
    scores = wups_scores(["dog", "car"], ["cat", "automobile"], [0.9, 0.0], wordnet)
    assert scores["wups@0.9"] == pytest.approx((0.0857143 + 1.0) / 2)
    assert scores["wups@0.0"] == pytest.approx((0.857143 + 1.0) / 2)


def test_wups_without_wordnet_is_unavailable_with_the_install_hint(tmp_path, monkeypatch):
    def no_system_wordnet():
        raise WordNetUnavailable("WordNet is not installed: apt-get install wordnet-base wordnet-sense-index")

    monkeypatch.setattr(wups_module, "load_wordnet", no_system_wordnet)
    assert vqa_scores(["dog"], ["dog"], None, None)["accuracy"] == 1.0  # accuracy needs no WordNet
    for source in (None, tmp_path / "corpora" / "wordnet"):
        scores = wups_scores(["dog"], ["cat"], [0.9, 0.0], source)
        assert set(scores) == {"wups@0.9", "wups@0.0"}
        assert all(str(v).startswith("unavailable") and "wordnet-base" in str(v) for v in scores.values())


def test_accuracy_overall_and_per_question_type(wordnet):
    scores = vqa_scores(
        ["Dog", "two", "red", "cat"], ["dog", "three", "red", "dog"], ["object", "number", "color", "object"], wordnet
    )
    assert scores["accuracy"] == 0.5
    assert scores["per_type"]["object"]["accuracy"] == 0.5 and scores["per_type"]["object"]["questions"] == 2
    assert scores["per_type"]["number"]["accuracy"] == 0.0
    assert scores["per_type"]["number"]["wups@0.9"] == pytest.approx(0.9)  # two/three: Wu-Palmer 0.9
    with pytest.raises(ValueError, match="3 question types for 4"):
        vqa_scores(["a"] * 4, ["a"] * 4, ["object"] * 3, None)


def _colour_questions(count: int, seed: int, tokenizer) -> dict:
    """'what colour is the object?' whose answer is fixed by the code at the top-left position."""
    codes = torch.randint(
        0, tokenizer.codebook_size, (count, *tokenizer.grid), generator=torch.Generator().manual_seed(seed)
    )
    codes[:, 0, 0] = torch.arange(count) % 4
    return {
        "codes": codes,
        "question": ["what colour is the object"] * count,
        "answer": [COLOURS[int(c)] for c in codes[:, 0, 0]],
    }


def _small(**changes) -> VQAConfig:
    lm = LanguageModelConfig(width=32, layers=1, heads=2, dropout=0.0, max_text_length=8)
    return VQAConfig(language_model=lm, **changes)


def test_vqa_answers_a_single_type_toy_set_well_above_chance():
    tokenizer = frozen_tokenizer()
    train, test = _colour_questions(32, 0, tokenizer), _colour_questions(16, 1, tokenizer)
    model = VQAModel(
        _small(),
        tokenizer,
        AnswerVocabulary.from_answers(train["answer"], 10),
        WordVocabulary.from_texts(train["question"]),
    )
    fit(model, train, steps=80)
    predicted = model.predict(test["codes"], test["question"])
    accuracy = sum(p == a for p, a in zip(predicted, test["answer"], strict=True)) / 16
    assert accuracy >= 0.75  # chance: 0.25


def test_vqa_starts_from_a_captioning_checkpoint(tmp_path):
    tokenizer = frozen_tokenizer()
    lm = LanguageModelConfig(width=32, layers=1, heads=2, dropout=0.0, max_text_length=8)
    captioning = CaptioningModel(CaptioningConfig(language_model=lm), tokenizer, WordVocabulary.from_texts(CAPTIONS))
    torch.save({"model": captioning.state_dict()}, tmp_path / "captioning.pt")
    model = VQAModel(_small(init_from=str(tmp_path / "captioning.pt")), tokenizer, AnswerVocabulary(COLOURS))
    assert model.lm.vocabulary.words == captioning.lm.vocabulary.words
    for name, value in captioning.state_dict().items():
        if name.startswith(("mapper.", "lm.decoder.")):
            torch.testing.assert_close(model.state_dict()[name], value)
    mismatched = _small(init_from=str(tmp_path / "captioning.pt"), prefix_mapper="transformer")
    with pytest.raises(ValueError, match="does not match"):
        VQAModel(mismatched, tokenizer, AnswerVocabulary(COLOURS))


def test_answers_outside_the_vocabulary_carry_no_loss_and_a_batch_of_them_is_no_error():
    tokenizer = frozen_tokenizer()
    model = VQAModel(_small(), tokenizer, AnswerVocabulary(COLOURS), WordVocabulary.from_texts(["what colour"]))
    batch = {"codes": distinct_codes(2, tokenizer), "question": ["what colour", "what"], "answer": ["mauve", "teal"]}
    out = model.training_loss(batch)
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad
    with pytest.raises(KeyError, match="'answer'"):
        model.training_loss({"codes": batch["codes"], "question": batch["question"]})


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch executed-marker",))


def test_a_malicious_captioning_checkpoint_is_refused_unexecuted(tmp_path, monkeypatch):
    import pickle

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=2))
    with pytest.raises(ValueError, match="evil.pt.*refused"):
        VQAModel(_small(init_from=str(tmp_path / "evil.pt")), frozen_tokenizer(), AnswerVocabulary(COLOURS))
    assert not (tmp_path / "executed-marker").exists()
