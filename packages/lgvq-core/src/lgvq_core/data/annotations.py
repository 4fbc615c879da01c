"""The optional annotations of datasets: segmentation maps, questions, referring expressions, attributes.

Downstream tasks on frozen codes need more than captions: semantic synthesis needs a label map
per image, VQA needs questions with answers, visual grounding needs phrases with boxes, the
``code-probe`` evaluation needs a class per attribute of each image. A dataset that has such
annotations declares them, and a task that needs one asks for it by kind:

- ``"segmentation"``: a label map per image (``long`` ``h w`` at the dataset's ``image_size``,
  class 0 is background; class names from ``segmentation_classes()``);
- ``"questions"``: :class:`Question` list per image (COCO-QA's four types, single-word answers);
- ``"referring"``: :class:`Referring` list per image (a phrase that names one object, and its box);
- ``"attributes"``: one class per named attribute per image (``attributes(key)`` gives attribute
  name -> class index; ``attribute_classes()`` gives attribute name -> class names, fixed for the
  dataset's config).

The dataset methods live on :class:`lgvq_core.data.base.CaptionedImages` (see its docstring for
how seeded keys transform masks and boxes with the image). The declaration lives here too, on the
dataset's config class (``annotation_kinds``), so that ``lgvq check`` can refuse a task whose
dataset lacks an annotation without building the dataset or importing torch.

This module imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs

from lgvq_core.config.problems import Problem
from lgvq_core.errors import LgvqError

SEGMENTATION, QUESTIONS, REFERRING, ATTRIBUTES = "segmentation", "questions", "referring", "attributes"
#: Every annotation kind a dataset may declare.
ANNOTATION_KINDS: frozenset[str] = frozenset({SEGMENTATION, QUESTIONS, REFERRING, ATTRIBUTES})

#: COCO-QA's question types, in the order of its ``types.txt`` ids (0 object, 1 number, 2 color,
#: 3 location).
QUESTION_TYPES: tuple[str, ...] = ("object", "number", "color", "location")


_LEFT_RIGHT = re.compile(r"\b(left|right)(?=(most|wards?)?\b)")


def mirror_words(text: str) -> str:
    """Swap "left" and "right" (also in "leftmost", "rightward"): the text of a mirrored image."""
    return _LEFT_RIGHT.sub(lambda match: "right" if match.group(1) == "left" else "left", text)


def _check_type(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in QUESTION_TYPES:
        raise ValueError(f"question type must be one of {', '.join(QUESTION_TYPES)}, got {value!r}")


def _check_box(instance: Any, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if len(value) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {value!r}")
    x0, y0, x1, y1 = value
    if not (0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0):
        raise ValueError(f"a box is (x0, y0, x1, y1) with 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1, got {value!r}")


@attrs.frozen
class Question:
    """A question about an image with its single-word answer (COCO-QA style)."""

    #: The question, e.g. ``"what color is the circle?"``.
    text: str
    #: The answer, one word, e.g. ``"red"``.
    answer: str
    #: One of :data:`QUESTION_TYPES`.
    type: str = attrs.field(validator=_check_type)

    @property
    def type_id(self) -> int:
        """The COCO-QA type id (0 object, 1 number, 2 color, 3 location)."""
        return QUESTION_TYPES.index(self.type)

    def mirrored(self) -> Question:
        """The question about the horizontally flipped image ("left" and "right" swapped)."""
        return Question(mirror_words(self.text), mirror_words(self.answer), self.type)


@attrs.frozen
class Referring:
    """A referring expression: a phrase that names exactly one object, and that object's box.

    ``box`` is ``(x0, y0, x1, y1)`` as **fractions of the image side** (in ``[0, 1]``, origin top
    left, x to the right), in the frame of the image the dataset yields for the same key: multiply
    by ``image_size`` for pixels. :meth:`box_pixels` does that.
    """

    #: The phrase, e.g. ``"the circle left of the blue square"``.
    text: str
    #: ``(x0, y0, x1, y1)`` in ``[0, 1]``, fractions of the image width and height.
    box: tuple[float, float, float, float] = attrs.field(
        converter=lambda b: tuple(float(v) for v in b), validator=_check_box
    )
    #: Which object: the dataset's id for it (a RefCOCO annotation id, a shape's index), or ``None``.
    object_id: int | None = None

    def mirrored(self) -> Referring:
        """The expression on the horizontally flipped image: box mirrored, "left" and "right" swapped."""
        x0, y0, x1, y1 = self.box
        return Referring(mirror_words(self.text), (1.0 - x1, y0, 1.0 - x0, y1), self.object_id)

    def box_pixels(self, image_size: int) -> tuple[float, float, float, float]:
        """The box in pixels of an ``image_size`` square image."""
        return tuple(v * image_size for v in self.box)  # type: ignore[return-value]


class MissingAnnotationError(LgvqError, LookupError):
    """A task asked a dataset for an annotation kind it does not have."""


def missing_annotation_message(dataset_type: str, kind: str, having: Iterable[str] | None = None) -> str:
    """``dataset 'x' has no 'segmentation' annotations; datasets with them: a, b`` (``having``: the
    registered datasets that declare ``kind``; without it, the message points at where they are listed)."""
    if kind not in ANNOTATION_KINDS:
        return f"unknown annotation kind {kind!r}; the kinds are: {', '.join(sorted(ANNOTATION_KINDS))}"
    message = f"dataset {dataset_type!r} has no {kind!r} annotations"
    if having is None:
        return f"{message}; docs/datasets.md lists the datasets that have them"
    others = ", ".join(sorted(having)) or "none is registered"
    return f"{message}; datasets with them: {others}"


def annotation_problem(path: str, dataset_type: str, kind: str, prefix: str = "") -> Problem:
    """A run-file problem: dataset ``dataset_type`` lacks annotation ``kind``. The run-file check adds
    which registered datasets have it (it holds the registry; a config class does not)."""
    if kind not in ANNOTATION_KINDS:
        return Problem(path, prefix + missing_annotation_message(dataset_type, kind))
    return Problem(
        path, f"{prefix}dataset {dataset_type!r} has no {kind!r} annotations", annotation=(dataset_type, kind)
    )
