"""The ``shapes`` data as a pure function of ``(seed, split, index)``, without torch.

Each image draws from its own numpy stream seeded by ``[seed, split, index, part]``: the splits
never share a stream, and the captions (part 1), questions (part 2) and referring expressions
(part 3) never depend on each other nor on how the scene (part 0) was drawn. Attributes are read
from the scene alone and draw nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from lgvq_core.data.annotations import Question, Referring
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes_attributes import attribute_classes, attributes_of
from lgvq_core.data.shapes_captions import captions_for
from lgvq_core.data.shapes_questions import questions_for
from lgvq_core.data.shapes_referring import referring_for
from lgvq_core.data.shapes_scene import Scene, render_labels, render_scene, sample_scene

_SPLIT_STREAM = {"train": 0, "val": 1}
_SCENE, _CAPTIONS, _QUESTIONS, _REFERRING = 0, 1, 2, 3


class ShapesSource:
    """Scenes, captions, images and ground truth of one split of the ``shapes`` data."""

    def __init__(self, config: ShapesConfig, split: str) -> None:
        if split not in _SPLIT_STREAM:
            raise ValueError(f"split must be one of {', '.join(_SPLIT_STREAM)}, got {split!r}")
        self.config = config
        self.split = split

    def __len__(self) -> int:
        return self.config.num_train if self.split == "train" else self.config.num_val

    def _rng(self, index: int, part: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, _SPLIT_STREAM[self.split], index, part])

    def scene(self, index: int) -> Scene:
        """The layout of image ``index`` (cheap: nothing is drawn)."""
        config = self.config
        small, large = config.shape_sizes
        return sample_scene(
            self._rng(index, _SCENE),
            config.min_shapes,
            config.max_shapes,
            config.background == "varied",
            {"small": small, "large": large},
        )

    def captions(self, index: int) -> list[str]:
        return captions_for(self.scene(index), self.config.captions_per_image, self._rng(index, _CAPTIONS))

    def image(self, index: int) -> Image.Image:
        return render_scene(self.scene(index), self.config.image_size)

    def labels(self, index: int) -> Image.Image:
        return render_labels(self.scene(index), self.config.image_size)

    def questions(self, index: int) -> list[Question]:
        return questions_for(self.scene(index), self._rng(index, _QUESTIONS))

    def referring(self, index: int) -> list[Referring]:
        return referring_for(self.scene(index), self._rng(index, _REFERRING))

    def attribute_classes(self) -> dict[str, tuple[str, ...]]:
        return attribute_classes(self.config)

    def attributes(self, index: int) -> dict[str, int]:
        return attributes_of(self.scene(index), self.config)

    def ground_truth(self, index: int) -> dict[str, Any]:
        return self.scene(index).ground_truth(self.config.image_size)
