"""The ``attributes`` annotation kind: each image's class per attribute, and ``shapes``'s from its scene.

Every shapes attribute is worked out here again from the scene's ground truth (or, for the
largest shape, from pixels drawn one shape at a time) and compared with what the dataset says.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lgvq_core.context import BuildContext
from lgvq_core.data.annotations import MissingAnnotationError
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes import ShapesDataset
from lgvq_core.data.shapes_attributes import attributes_of
from lgvq_core.data.shapes_scene import BACKGROUNDS, COLORS, KINDS, Scene, Shape, render_labels
from lgvq_core.registry import build, get_registry

WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def shapes(split: str = "train", **options) -> ShapesDataset:
    return ShapesDataset(ShapesConfig(**{"image_size": 32, "num_train": 40, "num_val": 12, **options}), split=split)


def named(dataset: ShapesDataset, index: int) -> dict[str, str]:
    """The item's attributes as class names."""
    classes = dataset.attribute_classes()
    return {name: classes[name][value] for name, value in dataset.attributes(index).items()}


def cell_of(x: float, y: float) -> str:
    """The 3x3 cell of a point, spelled out independently of the dataset's code."""
    row = ("top", "middle", "bottom")[min(int(y * 3), 2)]
    column = ("left", "center", "right")[min(int(x * 3), 2)]
    if row == "middle":
        return column
    return row if column == "center" else f"{row} {column}"


def drawn_pixels(shape: Shape, side: int = 256) -> int:
    """Pixels of ``shape`` drawn alone on a ``side``² label map."""
    alone = Scene(shapes=(shape,), background="white", gradient=None)
    return int((np.asarray(render_labels(alone, side)) > 0).sum())


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("split", ["train", "val"])
def test_attributes_agree_with_the_scene_ground_truth(seed, split):
    data = shapes(split, seed=seed)
    for index in range(len(data)):
        truth = data.ground_truth(index)
        found = named(data, index)
        assert found["count"] == WORDS[len(truth["shapes"])]
        for kind in KINDS:
            assert found[f"has_{kind}"] == ("yes" if kind in truth["shapes"] else "no"), (index, kind)
        for color in COLORS:
            assert found[f"has_{color}"] == ("yes" if color in truth["colors"] else "no"), (index, color)
        assert found["background"] == truth["background"]


@pytest.mark.parametrize("seed", [0, 3])
def test_largest_position_is_the_cell_of_the_shape_with_most_drawn_pixels(seed):
    data = shapes("train", seed=seed, min_shapes=2, max_shapes=4)
    checked = 0
    for index in range(len(data)):
        scene = data.scene(index)
        pixels = [drawn_pixels(shape) for shape in scene.shapes]
        ranked = sorted(pixels, reverse=True)
        if ranked[1] > 0.97 * ranked[0]:
            continue  # too close to call from pixels; the hand-placed tie below covers equal areas
        largest = scene.shapes[pixels.index(ranked[0])]
        assert named(data, index)["largest_position"] == cell_of(largest.cx, largest.cy), index
        checked += 1
    assert checked >= 30


def test_each_kind_s_area_is_the_share_of_the_image_it_covers():
    for kind in KINDS:
        shape = Shape(kind=kind, color="red", size="large", cx=0.5, cy=0.5, half=0.3)
        assert shape.area() == pytest.approx(drawn_pixels(shape, 512) / 512**2, rel=0.02), kind
    assert Shape("square", "red", "large", 0.5, 0.5, 0.25).area() == pytest.approx(0.25)
    assert Shape("circle", "red", "large", 0.5, 0.5, 0.25).area() == pytest.approx(math.pi / 16)


def test_equal_areas_go_to_the_first_shape():
    config = ShapesConfig()
    first = Shape("square", "red", "small", cx=0.15, cy=0.15, half=0.1)  # top left
    second = Shape("square", "blue", "small", cx=0.85, cy=0.85, half=0.1)  # bottom right, same area
    smaller_first = Shape("circle", "green", "small", cx=0.15, cy=0.15, half=0.1)
    classes = ShapesDataset(config, split="val").attribute_classes()["largest_position"]

    tie = attributes_of(Scene(shapes=(first, second), background="gray", gradient=None), config)
    beaten = attributes_of(Scene(shapes=(smaller_first, second), background="gray", gradient=None), config)

    assert classes[tie["largest_position"]] == "top left"
    assert classes[beaten["largest_position"]] == "bottom right"  # a disc is smaller than its square


def test_classes_are_fixed_by_the_config_and_every_index_is_valid():
    train, val = shapes("train"), shapes("val")
    classes = train.attribute_classes()
    assert classes == val.attribute_classes()
    assert list(classes) == [
        "count",
        *(f"has_{kind}" for kind in KINDS),
        *(f"has_{color}" for color in COLORS),
        "largest_position",
        "background",
    ]
    assert classes["count"] == ("one", "two", "three")
    assert all(classes[f"has_{name}"] == ("no", "yes") for name in (*KINDS, *COLORS))
    assert classes["largest_position"] == (
        "top left",
        "top",
        "top right",
        "left",
        "center",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    )
    assert classes["background"] == tuple(BACKGROUNDS)
    for data in (train, val):
        for index in range(len(data)):
            found = data.attributes(index)
            assert set(found) == set(classes)
            assert all(0 <= value < len(classes[name]) for name, value in found.items())
            assert data.attributes((index, 99)) == found  # a seeded key names the same image
    assert shapes(min_shapes=2, max_shapes=4).attribute_classes()["count"] == ("two", "three", "four")


def test_only_datasets_that_declare_attributes_have_them(tmp_path):
    from PIL import Image

    assert "attributes" in get_registry().annotation_kinds("shapes")
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "a.png")
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "a.png", "caption": "a gray square"}) + "\n")
    folder = build(
        "dataset",
        {"type": "image-text-folder", "root": str(tmp_path), "val_file": "train.jsonl", "image_size": 8},
        context=BuildContext(split="train", log=lambda message: None),
    )
    with pytest.raises(MissingAnnotationError) as caught:
        folder.attributes(0)
    assert str(caught.value) == (
        "dataset 'image-text-folder' has no 'attributes' annotations; datasets with them: shapes"
    )
    with pytest.raises(MissingAnnotationError):
        folder.attribute_classes()
