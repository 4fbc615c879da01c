"""The ``shapes`` dataset: deterministic, fast, and its captions tell the truth about its images."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from lgvq_core.cli import main
from lgvq_core.config.walker import config_fields
from lgvq_core.context import BuildContext
from lgvq_core.data import shapes_scene
from lgvq_core.data.base import collate
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes import ShapesDataset
from lgvq_core.data.shapes_scene import COLORS, KINDS
from lgvq_core.data.transforms import to_tensor
from lgvq_core.errors import ConfigError
from lgvq_core.registry import build

KIND_WORDS = KINDS + tuple(f"{kind}s" for kind in KINDS)
RELATION = re.compile(
    r"(\w+) (\w+) (?:is )?(to the left of|left of|to the right of|right of|above|below|under) "
    r"(?:an?|the) (?:(?:small|large) )?(\w+) (\w+)"
)
RELATION_NAME = {
    "to the left of": "left-of",
    "left of": "left-of",
    "to the right of": "right-of",
    "right of": "right-of",
    "above": "above",
    "below": "below",
    "under": "below",
}


def dataset(split: str = "train", **options) -> ShapesDataset:
    return ShapesDataset(ShapesConfig(**{"image_size": 32, "num_train": 40, "num_val": 12, **options}), split=split)


def fingerprint(data: ShapesDataset) -> str:
    digest = hashlib.sha256()
    for index in range(len(data)):
        item = data[(index, 1000 + index)]
        digest.update(item["image"].numpy().tobytes())
        digest.update("|".join(item["captions"] + [item["caption"]]).encode())
    return digest.hexdigest()


def test_items_follow_the_dataset_contract():
    data = dataset()
    item = data[0]
    assert len(data) == 40 and len(dataset("val")) == 12
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
    assert item["index"] == 0 and item["caption"] in item["captions"]
    assert data.image_size == 32


def test_same_config_gives_identical_data_and_splits_differ():
    assert fingerprint(dataset()) == fingerprint(dataset())
    assert fingerprint(dataset(seed=1)) != fingerprint(dataset())
    train, val = dataset("train", num_val=40), dataset("val", num_val=40)
    assert not torch.equal(train[0]["image"], val[0]["image"])


SOURCE_FINGERPRINT = """
import hashlib
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes_source import ShapesSource

source = ShapesSource(ShapesConfig(image_size=32, num_train=40, num_val=12), "train")
digest = hashlib.sha256()
for index in range(len(source)):
    digest.update(source.image(index).tobytes())
    digest.update("|".join(source.captions(index)).encode())
print(digest.hexdigest())
"""


def test_data_is_identical_in_another_process():
    # the generator needs no torch, so the other process starts fast
    result = subprocess.run([sys.executable, "-c", SOURCE_FINGERPRINT], capture_output=True, text=True, check=True)
    data = dataset()
    digest = hashlib.sha256()
    for index in range(len(data)):
        digest.update(data.source.image(index).tobytes())
        digest.update("|".join(data.captions_of(index)).encode())
        assert torch.equal(data[index]["image"], to_tensor(data.source.image(index)))
    assert result.stdout.strip() == digest.hexdigest()


def test_captions_name_only_colours_and_shapes_in_the_image():
    data = dataset()
    for index in range(len(data)):
        truth = data.ground_truth(index)
        for caption in data.captions_of(index):
            words = re.findall(r"[a-z]+", caption)
            assert {w for w in words if w in COLORS} <= set(truth["colors"]), caption
            assert {w.rstrip("s") for w in words if w in KIND_WORDS} <= set(truth["shapes"]), caption
            assert "on a" not in caption or f"on a {truth['background']} background" in caption


def test_relation_words_match_the_ground_truth_boxes():
    data = dataset(num_train=80, min_shapes=2)
    checked = 0
    for index in range(len(data)):
        truth = data.ground_truth(index)
        which = {color: position for position, color in enumerate(truth["colors"])}
        for caption in data.captions_of(index):
            for first_color, first_kind, phrase, second_color, second_kind in RELATION.findall(caption):
                i, j = which[first_color], which[second_color]
                assert (truth["shapes"][i], truth["shapes"][j]) == (first_kind, second_kind), caption
                relation = RELATION_NAME[phrase]
                assert (i, relation, j) in truth["relations"], caption
                a, b = truth["boxes"][i], truth["boxes"][j]
                holds = {
                    "left-of": a[2] <= b[0],
                    "right-of": a[0] >= b[2],
                    "above": a[3] <= b[1],
                    "below": a[1] >= b[3],
                }
                assert holds[relation], (caption, a, b)
                checked += 1
    assert checked > 40


def test_counts_in_captions_match_the_number_of_shapes():
    numbers = {"two": 2, "three": 3}
    data = dataset(num_train=60)
    for index in range(len(data)):
        truth = data.ground_truth(index)
        for caption in data.captions_of(index):
            match = re.match(r"(two|three) shapes", caption)
            if match:
                assert numbers[match.group(1)] == len(truth["shapes"]), caption
            for number, kind in re.findall(r"\b(two|three) (\w+)s\b", caption):
                if kind in KINDS:
                    assert truth["shapes"].count(kind) == numbers[number], caption


def test_ground_truth_boxes_hold_their_shape_colour():
    data = dataset(image_size=64, background="plain")
    for index in range(len(data)):
        truth = data.ground_truth(index)
        pixels = ((data[index]["image"] + 1) * 127.5).permute(1, 2, 0)  # h w 3
        for box, color in zip(truth["boxes"], truth["colors"], strict=True):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            centre = pixels[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            assert torch.allclose(centre, torch.tensor(COLORS[color], dtype=torch.float32), atol=3), (index, color)


def test_every_image_has_between_min_and_max_shapes_with_distinct_colours():
    data = dataset(num_train=60, min_shapes=2, max_shapes=4)
    counts = set()
    for index in range(len(data)):
        truth = data.ground_truth(index)
        counts.add(len(truth["shapes"]))
        assert len(set(truth["colors"])) == len(truth["colors"])
    assert counts == {2, 3, 4}


def test_edges_are_antialiased():
    data = dataset(image_size=64, background="plain")
    item = ((data[0]["image"] + 1) * 127.5).round().permute(1, 2, 0).reshape(-1, 3)
    pure = {tuple(c) for c in COLORS.values()} | {tuple(c) for c in shapes_scene.BACKGROUNDS.values()}
    mixed = [tuple(int(v) for v in pixel) for pixel in item if tuple(int(v) for v in pixel) not in pure]
    assert mixed, "an anti-aliased edge has pixels between the shape and the background colours"


def test_each_image_has_several_distinct_captions():
    data = dataset(captions_per_image=4)
    for index in range(len(data)):
        captions = data.captions_of(index)
        assert len(captions) == 4 and len(set(captions)) == 4


def test_seeds_sample_different_captions_and_no_seed_is_deterministic():
    data = dataset()
    sampled = {data[(3, seed)]["caption"] for seed in range(40)}
    assert len(sampled) > 1 and sampled <= set(data.captions_of(3))
    assert data[3]["caption"] == data[3]["caption"] == data.captions_of(3)[0]


def test_captions_are_made_without_drawing(monkeypatch):
    data = dataset()

    def refuse(*args, **kwargs):
        raise AssertionError("captions_of must not draw the image")

    monkeypatch.setattr("lgvq_core.data.shapes_source.render_scene", refuse)
    assert data.captions_of(0)
    assert len(list(data.all_captions())) == 40 * 5


def test_any_resolution_renders_the_same_scene():
    small, large = dataset(image_size=32), dataset(image_size=48)
    assert small[0]["image"].shape == (3, 32, 32) and large[0]["image"].shape == (3, 48, 48)
    assert small.ground_truth(0)["shapes"] == large.ground_truth(0)["shapes"]
    boxes_small, boxes_large = np.array(small.ground_truth(0)["boxes"]), np.array(large.ground_truth(0)["boxes"])
    assert np.allclose(boxes_large, boxes_small * 1.5, atol=0.01)


def test_builds_through_the_registry_for_each_split():
    train = build("dataset", {"type": "shapes", "image_size": 32, "num_train": 5}, context=BuildContext(split="train"))
    val = build("dataset", {"type": "shapes", "image_size": 32, "num_val": 3}, context=BuildContext(split="val"))
    assert (len(train), len(val)) == (5, 3)
    batch = collate([train[(0, 1)], train[(1, 2)]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["skipped"] == []


def test_config_rejects_more_min_than_max_shapes():
    with pytest.raises(ConfigError, match=r"max_shapes: must be >= min_shapes"):
        build("dataset", {"type": "shapes", "min_shapes": 3, "max_shapes": 2})


def test_schema_documents_every_key(capsys):
    assert main(["schema", "dataset", "shapes"]) == 0
    shown = capsys.readouterr().out
    for field in config_fields(ShapesConfig):
        assert field.name in shown and field.metadata["doc"]


def test_default_shape_sizes_are_the_original_ones():
    data = dataset()
    for index in range(len(data)):
        rng = data.source._rng(index, 0)
        assert data.scene(index) == shapes_scene.sample_scene(rng, 1, 3, True)  # SIZES, as before the option


def test_shape_sizes_set_each_shapes_side_within_its_jitter():
    small, large = 0.32, 0.44
    data = dataset(num_train=60, shape_sizes=(small, large), max_shapes=4)
    sides = {"small": small, "large": large}
    seen = set()
    for index in range(len(data)):
        for shape in data.scene(index).shapes:
            assert 0.92 * sides[shape.size] <= 2 * shape.half <= 1.08 * sides[shape.size] + 1e-12
            x0, y0, x1, y1 = shape.box()
            assert 0.0 < x0 and x1 < 1.0 and 0.0 < y0 and y1 < 1.0
            seen.add(shape.size)
    assert seen == {"small", "large"}


@pytest.mark.parametrize(
    ("sizes", "message"),
    [([0.4, 0.3], "0.05 <= small < large <= 0.8"), ([0.45, 0.6], "at most 0.4"), ([0.2, 0.9], "<= 0.8")],
)
def test_bad_shape_sizes_are_refused_naming_the_key(sizes, message):
    with pytest.raises(ConfigError) as info:
        build("dataset", {"type": "shapes", "shape_sizes": sizes})
    assert "shape_sizes" in str(info.value) and message in str(info.value)
