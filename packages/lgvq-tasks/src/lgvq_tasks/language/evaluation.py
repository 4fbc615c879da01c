"""Evaluation loops of the language tasks over batches of cached codes, with a shuffled-image control.

Each walks an iterable of batches (the runner's validation loader, or any list of dicts with the same
keys) in eval mode, without gradient, and returns the task's scores. ``shuffled_control`` also scores
every batch with its codes permuted among its images (a seeded permutation): a model that reads the
image drops to chance there; one that answers from the text alone does not.

- captioning: ``codes`` and ``captions`` (list of b reference lists: every caption of each image);
- VQA: ``codes``, ``question``, ``answer`` and ``question_type`` (lists of b strings);
- grounding: ``codes``, ``text_states``, ``text_pad``, ``boxes`` (and, for the picture, ``image`` when
  the batches carry images, a grey canvas otherwise, and ``expression``: the phrases as text).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..pictures import save_png
from .boxes import check_boxes, grounding_picture, grounding_scores
from .caption_metrics import caption_scores
from .captioning import CaptioningModel
from .grounding import GroundingModel
from .prefix import texts_of
from .vqa import VQAModel
from .vqa_metrics import vqa_scores


def control_codes(batch: dict, generator: torch.Generator) -> torch.Tensor:
    """The codes of the shuffled-image control: another image's for every item.

    ``batch["shuffled_codes"]`` when the batches carry them (another image of the whole split, see
    ``validation_batches``), else the batch's codes permuted among its items (:func:`shuffled_codes`).
    """
    given = batch.get("shuffled_codes")
    return given if given is not None else shuffled_codes(batch["codes"], generator)


def shuffled_codes(codes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch's codes with items permuted so that no item keeps its own (for b >= 2).

    Items are not images: when several items share an image, use ``shuffled_codes`` of the batch
    (:func:`control_codes`) instead.
    """
    count = codes.shape[0]
    if count < 2:
        return codes
    order = torch.randperm(count, generator=generator)
    permutation = torch.empty_like(order)
    permutation[order] = order.roll(-1)  # one random cycle through all images: nobody keeps its own
    return codes[permutation.to(codes.device)]


def _references(batch: dict, count: int) -> list[list[str]]:
    references = batch.get("captions")
    if references is None or len(references) != count or any(isinstance(r, str) or not r for r in references):
        raise ValueError(
            "caption evaluation needs batch['captions']: one non-empty list of reference captions per image"
        )
    return [list(r) for r in references]


@torch.no_grad()
def evaluate_captioning(
    model: CaptioningModel,
    batches: Iterable[dict],
    decoding: str | None = None,
    shuffled_control: bool = True,
    seed: int = 0,
    meteor: bool = True,
) -> dict[str, Any]:
    """Caption scores of the decoded captions (and, with the control, of captions from shuffled codes)."""
    generator = torch.Generator().manual_seed(seed)
    candidates, control, references = [], [], []
    for batch in batches:
        codes = batch["codes"]
        references += _references(batch, codes.shape[0])
        candidates += model.generate(codes, decoding=decoding)
        if shuffled_control:
            control += model.generate(control_codes(batch, generator), decoding=decoding)
    if not candidates:
        raise ValueError("no images to caption: the evaluation split is empty")
    result = caption_scores(candidates, references, meteor=meteor)
    result["examples"] = [{"caption": c, "references": r} for c, r in zip(candidates[:8], references[:8], strict=True)]
    if shuffled_control:
        result["shuffled_images"] = caption_scores(control, references, meteor=False)
    return result


class QuestionOnly:
    """The blind baseline of VQA: an answer from the question alone, learnt by counting training answers.

    A question is answered with the most frequent training answer to the same question text; a
    question never seen in training, with the most frequent answer of its question type, then of
    all questions. Ties go to the alphabetically first answer. For templated questions this is the
    best any model can do without the image, so it is the floor a VQA model must rise above.
    """

    def __init__(self, examples: Iterable[tuple[str, str, str]], by_question: bool = True) -> None:
        """``by_question = False``: the answer prior of the question type alone (the most frequent answer per type)."""
        by_text: dict[str, Counter] = defaultdict(Counter)
        by_type: dict[str, Counter] = defaultdict(Counter)
        overall: Counter = Counter()
        for text, answer, kind in examples:
            by_text[self.key(text)][answer] += 1
            by_type[kind][answer] += 1
            overall[answer] += 1
        if not overall:
            raise ValueError("the question-only baseline needs training questions; the training split has none")
        self.by_text = {text: self.most_frequent(counts) for text, counts in by_text.items()} if by_question else {}
        self.by_type = {kind: self.most_frequent(counts) for kind, counts in by_type.items()}
        self.overall = self.most_frequent(overall)

    @staticmethod
    def key(text: str) -> str:
        """The question as words: lower case, punctuation and repeated spaces dropped."""
        return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())

    @staticmethod
    def most_frequent(counts: Counter) -> str:
        return min(counts, key=lambda answer: (-counts[answer], answer))

    def __call__(self, question: str, kind: str) -> str:
        found = self.by_text.get(self.key(question))
        return found if found is not None else self.by_type.get(kind, self.overall)


@torch.no_grad()
def evaluate_vqa(
    model: VQAModel,
    batches: Iterable[dict],
    wordnet: Any = None,
    shuffled_control: bool = True,
    seed: int = 0,
    question_only: QuestionOnly | None = None,
    type_prior: QuestionOnly | None = None,
) -> dict[str, Any]:
    """Accuracy and WUPS overall and per question type (and with shuffled codes, the control).

    ``question_only``: also score the blind baseline's answers (:class:`QuestionOnly`) as ``question_only``;
    ``type_prior`` (a :class:`QuestionOnly` by type alone) as ``answer_prior``.
    """
    generator = torch.Generator().manual_seed(seed)
    predicted, control, truth, types, blind, prior, asked = [], [], [], [], [], [], []
    for batch in batches:
        codes = batch["codes"]
        questions = texts_of(batch, "question", codes.shape[0])
        asked += questions[: max(0, 8 - len(asked))]
        truth += texts_of(batch, "answer", codes.shape[0])
        kinds = texts_of(batch, "question_type", codes.shape[0])
        types += kinds
        predicted += model.predict(codes, questions)
        if shuffled_control:
            control += model.predict(control_codes(batch, generator), questions)
        if question_only is not None:
            blind += [question_only(q, k) for q, k in zip(questions, kinds, strict=True)]
        if type_prior is not None:
            prior += [type_prior(q, k) for q, k in zip(questions, kinds, strict=True)]
    if not truth:
        raise ValueError("no questions to answer: the evaluation split is empty")
    thresholds = model.config.wups_thresholds
    result = vqa_scores(predicted, truth, types, wordnet, thresholds)
    result["examples"] = [
        {"question": q, "answer": a, "truth": t} for q, a, t in zip(asked, predicted, truth, strict=False)
    ]
    if shuffled_control:
        result["shuffled_images"] = vqa_scores(control, truth, types, wordnet, thresholds)
    if question_only is not None:
        result["question_only"] = vqa_scores(blind, truth, types, wordnet, thresholds)
    if type_prior is not None:
        result["answer_prior"] = vqa_scores(prior, truth, types, wordnet, thresholds)
    return result


@torch.no_grad()
def evaluate_grounding(model: GroundingModel, batches: Iterable[dict], picture: Path | None = None) -> dict[str, Any]:
    """Acc@threshold and mean IoU; ``picture``: where to write predicted vs true boxes of a few samples.

    Batches that carry ``shuffled_codes`` (``validation_batches`` with a control seed) are also scored
    with those codes in place of their own: the ``shuffled_images`` control.
    """
    predicted, truth, shown, control = [], [], [], []
    for batch in batches:
        boxes = check_boxes(batch["boxes"])
        predicted.append(model.predict(batch).cpu())
        if batch.get("shuffled_codes") is not None:
            control.append(model.predict({**batch, "codes": batch["shuffled_codes"]}).cpu())
        truth.append(boxes.cpu())
        room = model.config.picture_samples - sum(len(s[1]) for s in shown)
        if picture is not None and room > 0:
            images = batch.get("image")
            texts = batch.get("expression") or [""] * boxes.shape[0]
            shown.append(
                (None if images is None else images[:room].cpu(), predicted[-1][:room], truth[-1][:room], texts[:room])
            )
    if not truth:
        raise ValueError("no referring expressions to ground: the evaluation split is empty")
    result: dict[str, Any] = grounding_scores(torch.cat(predicted), torch.cat(truth), model.config.iou_threshold)
    result["expressions"] = int(sum(t.shape[0] for t in truth))
    if control:
        result["shuffled_images"] = grounding_scores(torch.cat(control), torch.cat(truth), model.config.iou_threshold)
    if picture is not None and shown:
        images = None if any(s[0] is None for s in shown) else torch.cat([s[0] for s in shown])
        drawn = grounding_picture(
            images, torch.cat([s[1] for s in shown]), torch.cat([s[2] for s in shown]), [t for s in shown for t in s[3]]
        )
        result["picture"] = str(save_png(drawn, Path(picture)))
    return result


def constant_box_baseline(train_boxes: torch.Tensor, val_boxes: torch.Tensor, threshold: float = 0.5) -> dict[str, Any]:
    """Grounding without reading image or text: the mean training box for every expression, scored."""
    if train_boxes.numel() == 0 or val_boxes.numel() == 0:
        raise ValueError("the constant-box baseline needs training and validation boxes")
    box = train_boxes.double().mean(0)
    scores = grounding_scores(box.expand_as(val_boxes).float(), val_boxes.float(), threshold)
    return {"box": [round(float(v), 4) for v in box], **scores}


def most_frequent_caption_baseline(
    train_captions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Captioning without reading the image: the most frequent training caption for every image, scored."""
    counts = Counter(" ".join(c.lower().split()) for c in train_captions if c.strip())
    if not counts:
        raise ValueError("the most-frequent-caption baseline needs training captions")
    caption = QuestionOnly.most_frequent(counts)
    return {"caption": caption, **caption_scores([caption] * len(references), references, meteor=False)}
