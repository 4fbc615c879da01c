"""Language downstream models through the runner: captioning, VQA, grounding and their scores."""

from __future__ import annotations

import json
import math

import pytest
from test_downstream_runs import downstream_file, train_records

from lgvq_core.errors import ConfigError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train

SMALL_LM = {"width": 32, "layers": 1, "heads": 2}
CAPTIONING = {"type": "captioning", "language_model": SMALL_LM}
VQA = {"type": "vqa", "language_model": SMALL_LM}
GROUNDING = {"type": "grounding", "width": 32, "layers": 1, "heads": 2}


def scores(run_dir, task: str) -> dict:
    return json.loads((run_dir / "eval" / f"{task}.json").read_text())["metrics"]


def test_captioning_trains_resumes_exactly_and_is_scored(tmp_path, tokenizer_run, capsys):
    task = [{"type": "caption-scores", "meteor": False}]
    straight = train(
        load_run_file(downstream_file(tmp_path, tokenizer_run, name="straight", downstream=CAPTIONING, tasks=task))
    )
    expected = train_records(straight.run_dir)
    result = scores(straight.run_dir, "caption-scores")
    assert 0 <= result["bleu4"] <= 1 and result["images"] == 8 and result["cider_images"] == 8
    assert result["meteor"] == "not requested" and set(result["shuffled_images"]) >= {"bleu4", "cider_d"}
    assert sum(line.startswith("caption-scores: said ") for line in capsys.readouterr().out.splitlines()) == 3
    blind = result["most_frequent_caption"]  # one caption for every image: what "above chance" means
    assert isinstance(blind["caption"], str) and blind["images"] == 8 and set(blind) >= {"bleu4", "cider_d"}

    path = downstream_file(tmp_path, tokenizer_run, name="resumed", downstream=CAPTIONING, train={"max_steps": 3})
    first = train(load_run_file(path))
    train(load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=first.run_dir)
    got = train_records(first.run_dir)
    for step in (4, 5, 6):  # the word vocabulary travels in the checkpoint's state, the weights in safetensors
        assert got[step]["loss"] == expected[step]["loss"], step


def test_vqa_trains_on_one_item_per_question_starting_from_a_captioning_run(tmp_path, tokenizer_run, capsys):
    captioning = train(
        load_run_file(
            downstream_file(tmp_path, tokenizer_run, name="cap", downstream=CAPTIONING, train={"max_steps": 2})
        )
    )
    vqa = {**VQA, "init_from": str(captioning.run_dir)}
    task = [{"type": "vqa-scores"}]
    result = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="vqa", downstream=vqa, tasks=task)))
    records = train_records(result.run_dir)
    assert all(math.isfinite(r["loss"]) for r in records.values())
    metrics = scores(result.run_dir, "vqa-scores")
    assert metrics["questions"] > 8  # several questions per validation image
    assert set(metrics["per_type"]) <= {"object", "number", "color", "location"}
    assert 0 <= metrics["accuracy"] <= 1
    blind = metrics["question_only"]  # the answer prior counted on the run's training questions
    assert blind["questions"] == metrics["questions"] and set(blind["per_type"]) == set(metrics["per_type"])
    assert 0 < blind["accuracy"] <= 1
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("vqa-scores: '")]
    assert len(shown) == 3 and " -> " in shown[0] and "(truth " in shown[0]  # a few answers, beside the truth
    prior = metrics["answer_prior"]  # the most frequent answer of each question type
    assert prior["questions"] == metrics["questions"] and prior["accuracy"] <= blind["accuracy"] + 1e-9


def test_grounding_trains_on_referring_expressions_and_is_scored(tmp_path, tokenizer_run):
    task = [{"type": "grounding-scores"}]
    result = train(
        load_run_file(downstream_file(tmp_path, tokenizer_run, name="ground", downstream=GROUNDING, tasks=task))
    )
    metrics = scores(result.run_dir, "grounding-scores")
    assert 0 <= metrics["acc@0.5"] <= 1 and 0 <= metrics["mean_iou"] <= 1
    assert metrics["expressions"] > 8
    from PIL import Image

    picture = Image.open(result.run_dir / "eval" / "grounding-scores" / "grounding.png").convert("RGB")
    panel = picture.crop((20, 20, 60, 60))  # inside the first image, away from the box outlines
    assert [colour for _, colour in panel.getcolors(maxcolors=1 << 16)] != [(200, 200, 200)]  # not the grey canvas
    constant = metrics["constant_box"]  # the mean training box for every expression
    assert len(constant["box"]) == 4 and 0 <= constant["acc@0.5"] <= 1 and 0 <= constant["mean_iou"] <= 1
    assert set(metrics["shuffled_images"]) == {"acc@0.5", "mean_iou"}


def test_a_score_task_refuses_a_run_of_another_model(tmp_path, tokenizer_run):
    from lgvq_tasks.errors import TaskError

    path = downstream_file(
        tmp_path, tokenizer_run, downstream=CAPTIONING, train={"max_steps": 1}, tasks=[{"type": "vqa-scores"}]
    )
    with pytest.raises(TaskError, match="vqa-scores: scores a VQAModel downstream run; this is a CaptioningModel run"):
        train(load_run_file(path))


@pytest.mark.parametrize(
    ("model", "task", "option"),
    [
        ("vqa", "vqa-scores", "meteor"),
        ("grounding", "grounding-scores", "meteor"),
        ("grounding", "grounding-scores", "question_only"),
    ],
)
def test_a_score_option_the_task_does_not_act_on_is_refused(tmp_path, tokenizer_run, model, task, option):
    downstream = {"vqa": VQA, "grounding": GROUNDING}[model]
    path = downstream_file(tmp_path, tokenizer_run, downstream=downstream, tasks=[{"type": task, option: False}])
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert any(p.startswith(f"$.tasks[0].{option}: unknown key '{option}'") for p in info.value.problems), info.value


def test_vqa_on_a_dataset_without_questions_is_refused_by_check(tmp_path, tokenizer_run):
    folder = tmp_path / "images"
    folder.mkdir()
    data = {"type": "image-text-folder", "root": str(folder), "val_fraction": 0.5}
    with pytest.raises(ConfigError) as info:
        load_run_file(downstream_file(tmp_path, tokenizer_run, downstream=VQA, data=data))
    assert any("has no 'questions' annotations" in p and "coco-qa" in p for p in info.value.problems)


def test_check_warns_when_wups_cannot_be_computed_here(tmp_path, tokenizer_run, capsys, monkeypatch):
    from lgvq_core.cli import main
    from lgvq_core.wordnet import WordNetUnavailable

    def missing():
        raise WordNetUnavailable("no WordNet here")

    monkeypatch.setattr("lgvq_core.wordnet.prepare_wordnet", missing)
    path = downstream_file(tmp_path, tokenizer_run, downstream=VQA, tasks=[{"type": "vqa-scores"}])
    assert main(["check", str(path)]) == 0
    assert "warning: $.tasks[0] (vqa-scores): WUPS will be reported unavailable: no WordNet here" in (
        capsys.readouterr().err
    )
