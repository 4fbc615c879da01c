"""The dataset contract: keys and seeds, the caption rule, transforms, pixel scaling and collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from lgvq_core.data.base import CaptionedImages, collate, parse_key
from lgvq_core.data.transforms import apply_transform, to_tensor
from lgvq_core.errors import DataError


def gradient_image(width: int, height: int) -> Image.Image:
    """An image whose every pixel differs, so any crop or flip changes the result."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8), "RGB")


class InMemory(CaptionedImages):
    """A dataset over images and captions held in lists, to test the base class alone."""

    name = "in-memory"

    def __init__(self, images, captions, **options):
        options.setdefault("split", "train")
        options.setdefault("image_size", 16)
        super().__init__(**options)
        self.images, self.captions = images, captions

    def __len__(self):
        return len(self.images)

    def _raw_captions(self, index):
        if self.captions[index] is None:
            raise DataError(f"caption file captions/{index}.txt not found")
        return self.captions[index]

    def _load_image(self, index):
        return self.images[index]


def words(count: int, word: str = "bird") -> str:
    return " ".join([word] * count)


# ---------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------
def test_a_key_is_an_index_or_an_index_seed_pair():
    assert parse_key(3, 5) == (3, None)
    assert parse_key((3, 17), 5) == (3, 17)
    assert parse_key(np.int64(2), 5) == (2, None)
    assert parse_key(torch.tensor(4), 5) == (4, None)


@pytest.mark.parametrize("key", [5, -1, (5, 0)])
def test_an_index_outside_the_dataset_raises_index_error(key):
    with pytest.raises(IndexError, match="out of range"):
        parse_key(key, 5)


@pytest.mark.parametrize("key", [1.5, "1", (1, 2, 3)])
def test_other_keys_are_rejected(key):
    with pytest.raises(TypeError):
        parse_key(key, 5)


def test_the_same_seed_gives_the_same_item_and_other_seeds_differ():
    captions = [f"a bird number {k}" for k in range(8)]
    data = InMemory([gradient_image(40, 24)], [captions], train_transform="resize-random-crop-flip")
    first, again = data[(0, 123)], data[(0, 123)]
    assert torch.equal(first["image"], again["image"]) and first["caption"] == again["caption"]
    items = [data[(0, seed)] for seed in range(20)]
    assert len({item["caption"] for item in items}) > 1
    assert len({item["image"].numpy().tobytes() for item in items}) > 1


def test_a_seeded_item_draws_its_caption_then_its_crop_from_the_seed_generator():
    captions = ["first caption", "second caption", "third caption"]
    data = InMemory([gradient_image(40, 24)], [captions], image_size=16, train_transform="resize-random-crop")
    generator = torch.Generator().manual_seed(99)
    expected_caption = captions[int(torch.randint(3, (1,), generator=generator))]
    resized = gradient_image(40, 24).resize((26, 16), Image.BILINEAR)  # shorter side 24 -> 16
    top = int(torch.randint(0, 1, (1,), generator=generator))
    left = int(torch.randint(0, 26 - 16 + 1, (1,), generator=generator))
    expected = to_tensor(resized.crop((left, top, left + 16, top + 16)))
    item = data[(0, 99)]
    assert item["caption"] == expected_caption
    assert torch.equal(item["image"], expected)


def test_an_unseeded_item_gets_the_val_transform_and_the_first_short_caption():
    image = gradient_image(40, 24)
    data = InMemory([image], [[words(30), "short one", "short two"]], train_transform="resize-random-crop-flip")
    item = data[0]
    assert item["caption"] == "short one"
    expected = TF.center_crop(TF.resize(image, 16), 16)
    assert torch.equal(item["image"], to_tensor(expected))
    assert torch.equal(data[0]["image"], item["image"])


def test_a_seeded_val_item_samples_captions_but_keeps_the_val_transform():
    image = gradient_image(40, 24)
    data = InMemory([image], [["one", "two", "three"]], split="val", train_transform="resize-random-crop-flip")
    items = [data[(0, seed)] for seed in range(12)]
    assert len({item["caption"] for item in items}) > 1
    assert all(torch.equal(item["image"], data[0]["image"]) for item in items)


# ---------------------------------------------------------------------------------------------
# caption rule
# ---------------------------------------------------------------------------------------------
def test_only_captions_of_at_most_27_words_are_sampled():
    long, limit = words(28, "long"), words(27, "edge")
    data = InMemory([gradient_image(16, 16)], [[long, limit, "short"]])
    sampled = {data[(0, seed)]["caption"] for seed in range(40)}
    assert sampled == {limit, "short"}


def test_max_caption_words_sets_the_limit_and_zero_lifts_it():
    captions = [words(5, "five"), words(3, "three")]
    assert {
        InMemory([gradient_image(8, 8)], [captions], max_caption_words=3)[(0, s)]["caption"] for s in range(20)
    } == {captions[1]}
    assert {
        InMemory([gradient_image(8, 8)], [captions], max_caption_words=0)[(0, s)]["caption"] for s in range(20)
    } == set(captions)


def test_when_no_caption_is_short_enough_the_shortest_is_used_with_one_warning():
    logged = []
    captions = [[words(31), words(29)], [words(40), words(35)]]
    data = InMemory([gradient_image(8, 8)] * 2, captions, log=logged.append)
    assert data[(0, 1)]["caption"] == words(29)
    assert data[(1, 2)]["caption"] == words(35)
    assert data[0]["caption"] == words(29)
    assert len(logged) == 1
    assert "no caption of item 0" in logged[0] and "max_caption_words" in logged[0]


def test_captions_are_stripped_lowercased_and_blank_ones_dropped():
    data = InMemory([gradient_image(8, 8)], [["  A Red BIRD \n", "   ", "Blue"]])
    assert data.captions_of(0) == ["a red bird", "blue"]
    assert InMemory([gradient_image(8, 8)], [["A Red Bird"]], lowercase=False).captions_of(0) == ["A Red Bird"]


def test_an_image_without_captions_is_a_bad_item():
    data = InMemory([gradient_image(8, 8)], [["", " "]])
    with pytest.raises(DataError, match="has no captions.*skip_bad_items"):
        data[0]


def test_all_captions_lists_every_caption_of_every_image():
    data = InMemory([gradient_image(8, 8)] * 2, [["a", "b"], ["c"]])
    assert list(data.all_captions()) == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# pixels and transforms
# ---------------------------------------------------------------------------------------------
def test_pixels_are_scaled_as_x_over_127_5_minus_1():
    image = Image.new("RGB", (4, 4), (0, 255, 51))
    pixels = to_tensor(image)
    assert pixels.shape == (3, 4, 4) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1.0]))


@pytest.mark.parametrize("size", [(40, 24), (24, 40), (17, 33), (16, 16)])
def test_resize_center_crop_matches_torchvision(size):
    image = gradient_image(*size)
    ours = apply_transform(image, "resize-center-crop", 16)
    reference = TF.center_crop(TF.resize(image, 16), 16)
    assert ours.size == (16, 16)
    assert np.array_equal(np.asarray(ours), np.asarray(reference))


def test_resize_square_scales_both_sides():
    image = gradient_image(40, 24)
    ours = apply_transform(image, "resize-square", 16)
    assert np.array_equal(np.asarray(ours), np.asarray(TF.resize(image, [16, 16])))


def test_flip_mirrors_the_image_for_about_half_the_seeds():
    image = gradient_image(16, 16)
    plain = np.asarray(apply_transform(image, "resize-center-crop", 16))
    flips = 0
    for seed in range(40):
        out = np.asarray(apply_transform(image, "resize-center-crop-flip", 16, torch.Generator().manual_seed(seed)))
        if np.array_equal(out, plain[:, ::-1]):
            flips += 1
        else:
            assert np.array_equal(out, plain)
    assert 10 <= flips <= 30


def test_random_crop_stays_inside_the_image_and_moves_with_the_seed():
    image = gradient_image(60, 16)
    crops = set()
    for seed in range(30):
        out = np.asarray(apply_transform(image, "resize-random-crop", 16, torch.Generator().manual_seed(seed)))
        assert out.shape == (16, 16, 3)
        left = int(np.argmin(np.abs(np.asarray(image)[0, :, 0].astype(int) - int(out[0, 0, 0]))))
        crops.add(left)
        assert left + 16 <= 60
    assert len(crops) > 5


def test_random_steps_without_a_generator_take_the_centre_and_do_not_flip():
    image = gradient_image(40, 24)
    assert np.array_equal(
        np.asarray(apply_transform(image, "resize-random-crop-flip", 16)),
        np.asarray(apply_transform(image, "resize-center-crop", 16)),
    )


def test_unknown_transform_names_are_rejected():
    with pytest.raises(ValueError, match="unknown transform 'resize-blur'"):
        InMemory([gradient_image(8, 8)], [["a"]], train_transform="resize-blur")


# ---------------------------------------------------------------------------------------------
# collate
# ---------------------------------------------------------------------------------------------
def test_collate_stacks_images_and_reports_skipped_items():
    data = InMemory([gradient_image(20, 20)] * 3, [["a cat"], None, ["a dog", "a hound"]], skip_bad_items=True)
    items = [data[(0, 5)], data[(1, 6)], data[(2, 7)]]
    assert items[1] == {"index": 1, "error": "caption file captions/1.txt not found"}
    batch = collate(items)
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["caption"][0] == "a cat" and batch["caption"][1] in ("a dog", "a hound")
    assert batch["captions"] == [["a cat"], ["a dog", "a hound"]]
    assert batch["index"] == [0, 2]
    assert batch["skipped"] == [(1, "caption file captions/1.txt not found")]


def test_collate_of_only_skipped_items_has_no_images():
    batch = collate([{"index": 4, "error": "image file x.jpg not found"}])
    assert batch["image"] is None and batch["index"] == [] and batch["skipped"] == [(4, "image file x.jpg not found")]


def test_a_bad_item_raises_unless_skipping():
    data = InMemory([gradient_image(8, 8)], [None])
    with pytest.raises(DataError, match="captions/0.txt"):
        data[0]


def test_all_captions_skips_unreadable_ones_only_when_skipping_and_says_so():
    logged = []
    data = InMemory([gradient_image(8, 8)] * 2, [None, ["b"]], skip_bad_items=True, log=logged.append)
    assert list(data.all_captions()) == ["b"]
    assert len(logged) == 1 and "1 image(s) with unreadable captions" in logged[0]
    with pytest.raises(DataError):
        list(InMemory([gradient_image(8, 8)] * 2, [None, ["b"]]).all_captions())
