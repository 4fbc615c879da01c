"""``shapes``: the embedded default dataset, generated on the fly and needing no files.

Each image holds 1-3 coloured shapes (circle, square, triangle, diamond, star; small or large;
8 colours; a white, gray or black background) drawn anti-aliased with PIL. Each image has several
templated captions ("a small red circle to the left of a large blue square", "two shapes: ...")
and ground truth for downstream tasks (boxes, attributes, relations; :meth:`ground_truth`).

Every annotation kind comes from the same scene (:mod:`lgvq_core.data.annotations`): a label map
(background + one class per shape kind, :data:`SEGMENTATION_CLASSES`), COCO-QA-style questions
with unique single-word answers (:mod:`shapes_questions`), referring expressions that each name
one shape, with its box (:mod:`shapes_referring`), and a class per attribute (count, kinds and
colours present, where the largest shape is, the background: :mod:`shapes_attributes`). Images are
neither cropped nor flipped, so the annotations of a seeded key equal those of the unseeded one.

Everything is a pure function of ``(seed, split, index)``: the same config gives the same data in
every process, and the two splits draw from different seed streams.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from lgvq_core.data.annotations import ANNOTATION_KINDS, Question, Referring
from lgvq_core.data.base import CaptionedImages, split_options
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes_scene import SEGMENTATION_CLASSES, Scene
from lgvq_core.data.shapes_source import ShapesSource


class ShapesDataset(CaptionedImages):
    name = "shapes"
    ANNOTATION_KINDS = ANNOTATION_KINDS

    def __init__(self, config: ShapesConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        super().__init__(
            split=split,
            image_size=config.image_size,
            train_transform="resize-square",  # generated at image_size: no resize, and no flip
            val_transform="resize-square",  # (a flip would swap "left of" and "right of")
            max_caption_words=None,
            lowercase=False,
            skip_bad_items=skip_bad_items,
            log=log,
        )
        self.config = config
        self.source = ShapesSource(config, split)

    def __len__(self) -> int:
        return len(self.source)

    def scene(self, index: int) -> Scene:
        """The layout of image ``index`` (cheap: nothing is drawn)."""
        return self.source.scene(index)

    def _raw_captions(self, index: int) -> list[str]:
        return self.source.captions(index)

    def _load_image(self, index: int) -> Image.Image:
        return self.source.image(index)

    def _image_dimensions(self, index: int) -> tuple[int, int]:
        return self.config.image_size, self.config.image_size

    def _segmentation_classes(self) -> tuple[str, ...]:
        return SEGMENTATION_CLASSES

    def _raw_segmentation(self, index: int) -> Image.Image:
        return self.source.labels(index)

    def _raw_questions(self, index: int) -> list[Question]:
        return self.source.questions(index)

    def _raw_referring(self, index: int) -> list[Referring]:
        return self.source.referring(index)

    def _attribute_classes(self) -> dict[str, tuple[str, ...]]:
        return self.source.attribute_classes()

    def _raw_attributes(self, index: int) -> dict[str, int]:
        return self.source.attributes(index)

    def ground_truth(self, index: int) -> dict[str, Any]:
        """``boxes`` (pixel x0 y0 x1 y1), ``shapes``, ``colors``, ``sizes`` (one entry per shape),
        ``relations`` (``(i, "left-of" | "right-of" | "above" | "below", j)``), ``background``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item index {index} out of range for a dataset of {len(self)} items")
        return self.source.ground_truth(index)


def build_shapes(config: ShapesConfig, context: Any) -> ShapesDataset:
    return ShapesDataset(config, **split_options(context))
