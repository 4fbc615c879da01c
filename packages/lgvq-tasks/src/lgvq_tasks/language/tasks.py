"""Evaluation tasks of the language downstream models: caption, VQA and grounding scores.

Each runs on a downstream run's validation split (``lgvq eval`` or the end of ``lgvq run``) and
refuses, with a message, a run whose model is not the one it scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lgvq_core.api import TrainedModel
from lgvq_tasks.errors import TaskError


def validation_batches(
    model: TrainedModel, expected: type, task: str, batch_size: int, control_seed: int | None = None
):
    """The downstream run's validation split in batches, as the model's ``training_loss`` takes them.

    With ``control_seed``, each batch also holds ``shuffled_codes``: for every item the codes of
    another image of the split (:meth:`~lgvq_core.data.codes.CodeDataset.partner_codes`), so that
    the shuffled-image control never pairs a question with its own image, as a permutation within a
    batch would (a batch of questions holds a few images' questions each).
    """
    from lgvq_core.api import model_inputs, to_device

    run = model.downstream_run
    if run is None or not isinstance(run.model, expected):
        got = "a tokenizer run" if run is None else f"a {type(run.model).__name__} run"
        raise TaskError(f"{task}: scores a {expected.__name__} downstream run; this is {got}")
    data = run.val_data
    for start in range(0, len(data), batch_size):
        batch = data.collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        if batch["index"]:
            if control_seed is not None:
                batch["shuffled_codes"] = data.partner_codes(batch["image_index"], control_seed)
            yield model_inputs(run, to_device(batch, run.device))


def training_answers(data: Any, by_question: bool = True):
    """The question-only baseline (:class:`~lgvq_tasks.language.evaluation.QuestionOnly`) of a question split.

    Counts the answers of every readable training question as annotated (not mirrored); None when
    the split holds no questions (a dataset other than a question split: nothing to count).
    """
    from lgvq_tasks.language.evaluation import QuestionOnly

    pairs = getattr(data, "pairs", None)
    if not pairs or getattr(data, "unit", None) != "question":
        return None
    read = data.images.questions
    questions = [read(image)[j] for image, j in pairs]
    return QuestionOnly([(q.text, q.answer, q.type) for q in questions], by_question)


def with_images(batches, data: Any, count: int):
    """The batches, the first ones carrying ``image`` (the validation images the codes came from) until
    ``count`` items have theirs: the grounding picture draws the boxes on them."""
    given = 0
    for batch in batches:
        if given < count and batch.get("image_index"):
            images = [data.images[i].get("image") for i in batch["image_index"]]
            if all(isinstance(image, torch.Tensor) for image in images):
                batch = {**batch, "image": torch.stack(images).to(batch["codes"].device)}
                given += len(images)
        yield batch


def split_boxes(data: Any) -> torch.Tensor:
    """Every readable referring expression's box of a referring split (n x 4, as annotated, not mirrored)."""
    pairs = getattr(data, "pairs", None)
    if not pairs or getattr(data, "unit", None) != "referring":
        return torch.zeros(0, 4)
    read = data.images.referring
    return torch.tensor([read(image)[j].box for image, j in pairs], dtype=torch.float64)


class CaptionScores:
    name = "caption-scores"

    def __init__(self, config) -> None:
        self.config = config

    def run(self, model: TrainedModel, data: Any, out_dir: Path) -> dict[str, Any]:
        from lgvq_tasks.language.captioning import CaptioningModel
        from lgvq_tasks.language.evaluation import evaluate_captioning, most_frequent_caption_baseline

        control = self.config.seed if self.config.shuffled_control else None
        batches = validation_batches(model, CaptioningModel, self.name, self.config.batch_size, control)
        result = evaluate_captioning(
            model.downstream_run.model,
            batches,
            shuffled_control=self.config.shuffled_control,
            seed=self.config.seed,
            meteor=self.config.meteor,
        )
        run = model.downstream_run
        val = run.val_data
        references = [val.images.captions_of(i) for i in range(len(val.indices)) if bool(val.valid[i])]
        result["most_frequent_caption"] = most_frequent_caption_baseline(run.train_data.all_captions(), references)
        for example in result.get("examples", [])[:3]:
            print(f"caption-scores: said {example['caption']!r} for {example['references'][:2]}", flush=True)
        names = ("bleu4", "rouge_l", "cider_d", "meteor")
        return {**result, "better": {name: "higher" for name in names}}


class VQAScores:
    name = "vqa-scores"

    def __init__(self, config) -> None:
        self.config = config

    def run(self, model: TrainedModel, data: Any, out_dir: Path) -> dict[str, Any]:
        from lgvq_tasks.language.evaluation import evaluate_vqa
        from lgvq_tasks.language.vqa import VQAModel

        control = self.config.seed if self.config.shuffled_control else None
        batches = validation_batches(model, VQAModel, self.name, self.config.batch_size, control)
        train = model.downstream_run.train_data
        result = evaluate_vqa(
            model.downstream_run.model,
            batches,
            shuffled_control=self.config.shuffled_control,
            seed=self.config.seed,
            question_only=training_answers(train) if self.config.question_only else None,
            type_prior=training_answers(train, by_question=False) if self.config.question_only else None,
        )
        for example in result.get("examples", [])[:3]:
            print(
                f"vqa-scores: {example['question']!r} -> {example['answer']!r} (truth {example['truth']!r})", flush=True
            )
        ranked = ["accuracy", *(f"wups@{t}" for t in model.downstream_run.model.config.wups_thresholds)]
        ranked += [f"per_type.{kind}.{name}" for kind in result.get("per_type", {}) for name in ranked[:3]]
        return {**result, "better": {name: "higher" for name in ranked}}


class GroundingScores:
    name = "grounding-scores"

    def __init__(self, config) -> None:
        self.config = config

    def run(self, model: TrainedModel, data: Any, out_dir: Path) -> dict[str, Any]:
        from lgvq_tasks.language.evaluation import constant_box_baseline, evaluate_grounding
        from lgvq_tasks.language.grounding import GroundingModel

        control = self.config.seed if self.config.shuffled_control else None
        batches = validation_batches(model, GroundingModel, self.name, self.config.batch_size, control)
        out_dir.mkdir(parents=True, exist_ok=True)
        run = model.downstream_run
        batches = with_images(batches, run.val_data, run.model.config.picture_samples)
        result = evaluate_grounding(run.model, batches, picture=out_dir / "grounding.png")
        train_boxes, val_boxes = split_boxes(run.train_data), split_boxes(run.val_data)
        if len(train_boxes) and len(val_boxes):
            result["constant_box"] = constant_box_baseline(train_boxes, val_boxes, run.model.config.iou_threshold)
        return {**result, "better": {"acc@0.5": "higher", "mean_iou": "higher"}}


def build_caption_scores(config, context=None) -> CaptionScores:
    return CaptionScores(config)


def build_vqa_scores(config, context=None) -> VQAScores:
    return VQAScores(config)


def build_grounding_scores(config, context=None) -> GroundingScores:
    return GroundingScores(config)
