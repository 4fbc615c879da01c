"""Attributes of a ``shapes`` scene: one class per attribute, read from the scene's ground truth.

What a probe on an image's codes can be asked about the image (the ``attributes`` annotation kind):

- ``count``: how many shapes, as a word, among ``min_shapes`` .. ``max_shapes`` of the config;
- ``has_<kind>`` for each of the 5 kinds and ``has_<color>`` for each of the 8 colours: ``no`` / ``yes``;
- ``largest_position``: the cell of the 3x3 grid holding the centre of the largest shape, by the
  area of its drawn outline (the first of equal areas), among :data:`CELLS`;
- ``background``: the background colour's name.

The class names depend only on the config, never on an image, so every item and both splits share them.
"""

from __future__ import annotations

from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes_captions import NUMBERS
from lgvq_core.data.shapes_scene import BACKGROUNDS, CELLS, COLORS, KINDS, Scene

NO_YES: tuple[str, str] = ("no", "yes")


def attribute_classes(config: ShapesConfig) -> dict[str, tuple[str, ...]]:
    """Attribute name -> class names, in the order :func:`attributes_of` indexes them."""
    classes: dict[str, tuple[str, ...]] = {
        "count": tuple(NUMBERS[n] for n in range(config.min_shapes, config.max_shapes + 1))
    }
    classes.update({f"has_{kind}": NO_YES for kind in KINDS})
    classes.update({f"has_{color}": NO_YES for color in COLORS})
    classes["largest_position"] = CELLS
    classes["background"] = tuple(BACKGROUNDS)
    return classes


def largest_shape(scene: Scene) -> int:
    """Index of the shape with the largest drawn area; the first of them on a tie."""
    areas = [shape.area() for shape in scene.shapes]
    return areas.index(max(areas))


def attributes_of(scene: Scene, config: ShapesConfig) -> dict[str, int]:
    """The class index of every attribute of :func:`attribute_classes` for ``scene``."""
    kinds = {shape.kind for shape in scene.shapes}
    colors = {shape.color for shape in scene.shapes}
    found = {"count": len(scene.shapes) - config.min_shapes}
    found.update({f"has_{kind}": int(kind in kinds) for kind in KINDS})
    found.update({f"has_{color}": int(color in colors) for color in COLORS})
    found["largest_position"] = CELLS.index(scene.shapes[largest_shape(scene)].cell())
    found["background"] = tuple(BACKGROUNDS).index(scene.background)
    return found
