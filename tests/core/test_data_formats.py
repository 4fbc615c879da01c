"""The real data set formats, each read from a tiny copy of its real layout written by the test."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from lgvq_core.context import BuildContext
from lgvq_core.data.base import collate
from lgvq_core.data.folder import in_val_split
from lgvq_core.registry import build


def write_image(path: Path, size: tuple[int, int] = (24, 18), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dataset(table: dict, split: str = "train", **context):
    return build("dataset", table, context=BuildContext(split=split, **context))


# ---------------------------------------------------------------------------------------------
# image-text-folder
# ---------------------------------------------------------------------------------------------
def folder_fixture(root: Path, images: int = 4) -> Path:
    lines = []
    for k in range(images):
        write_image(root / "photos" / f"{k}.png", size=(20 + k, 16), color=(10 * k, 100, 200))
        lines.append(json.dumps({"image": f"photos/{k}.png", "captions": [f"Photo {k} of a thing", f"picture {k}"]}))
    write_lines(root / "train.jsonl", lines[:-1])
    write_lines(root / "val.jsonl", ["", json.dumps({"image": "photos/3.png", "caption": "The last photo"})])
    return root


def test_image_text_folder_reads_train_and_val_files(tmp_path):
    root = folder_fixture(tmp_path)
    table = {"type": "image-text-folder", "root": str(root), "val_file": "val.jsonl", "image_size": 8}
    train, val = dataset(table), dataset(table, "val")
    assert (len(train), len(val)) == (3, 1)
    assert train.captions_of(1) == ["photo 1 of a thing", "picture 1"]
    assert val.captions_of(0) == ["the last photo"]
    item = train[(2, 7)]
    assert item["image"].shape == (3, 8, 8) and item["caption"] in train.captions_of(2)


def test_image_text_folder_merges_lines_of_the_same_image(tmp_path):
    write_image(tmp_path / "a.jpg")
    lines = [json.dumps({"image": "a.jpg", "caption": "one"}), json.dumps({"image": "a.jpg", "captions": ["two"]})]
    write_lines(tmp_path / "train.jsonl", lines)
    write_lines(tmp_path / "val.jsonl", lines[:1])
    data = dataset({"type": "image-text-folder", "root": str(tmp_path), "val_file": "val.jsonl"})
    assert len(data) == 1 and data.captions_of(0) == ["one", "two"]


def test_image_text_folder_val_fraction_splits_by_a_seeded_hash(tmp_path):
    root = folder_fixture(tmp_path, images=30)
    write_lines(
        root / "all.jsonl",
        [json.dumps({"image": f"photos/{k}.png", "captions": [f"photo {k}"]}) for k in range(30)],
    )
    table = {"type": "image-text-folder", "root": str(root), "train_file": "all.jsonl", "val_fraction": 0.3}
    train, val = dataset(table), dataset(table, "val")
    train_images = {path.name for path in train.images}
    val_images = {path.name for path in val.images}
    assert not train_images & val_images and len(train_images | val_images) == 30
    assert val_images == {f"{k}.png" for k in range(30) if in_val_split(f"photos/{k}.png", 0, 0.3)}
    assert 3 <= len(val_images) <= 15
    other_seed = dataset({**table, "split_seed": 1}, "val")
    assert {path.name for path in other_seed.images} != val_images


# ---------------------------------------------------------------------------------------------
# coco-captions
# ---------------------------------------------------------------------------------------------
def coco_fixture(root: Path) -> Path:
    def split(name: str, images: dict[int, list[str]], uncaptioned: int) -> None:
        listed = [{"id": image_id, "file_name": f"COCO_{name}2014_{image_id:012d}.jpg"} for image_id in images]
        listed.append({"id": uncaptioned, "file_name": f"COCO_{name}2014_{uncaptioned:012d}.jpg"})
        annotations = [
            {"id": 1000 * image_id + k, "image_id": image_id, "caption": caption}
            for image_id, captions in images.items()
            for k, caption in enumerate(captions)
        ]
        for image_id in [*images, uncaptioned]:
            write_image(root / f"{name}2014" / f"COCO_{name}2014_{image_id:012d}.jpg", size=(32, 24))
        path = root / "annotations" / f"captions_{name}2014.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"info": {}, "images": listed, "annotations": annotations}))

    # ids with fewer than 6 digits are the ones the official loader lost
    split("train", {9: ["A dog.", "A brown dog runs"], 123456: ["Two cats", "cats on a sofa", "A cat pair"]}, 77)
    split("val", {42: ["A bus"]}, 43)
    return root


def test_coco_reads_images_by_file_name_whatever_the_id_length(tmp_path):
    logged = []
    root = coco_fixture(tmp_path)
    data = dataset({"type": "coco-captions", "root": str(root), "image_size": 16}, log=logged.append)
    assert len(data) == 2
    assert data.images[0].name == "COCO_train2014_000000000009.jpg"
    assert data.captions_of(0) == ["a dog.", "a brown dog runs"]
    assert data[(0, 3)]["image"].shape == (3, 16, 16)
    assert any("1 of 3 images" in line and "no caption" in line for line in logged)
    val = dataset({"type": "coco-captions", "root": str(root)}, "val")
    assert len(val) == 1 and val.captions_of(0) == ["a bus"]


def test_coco_per_caption_makes_one_item_per_caption(tmp_path):
    root = coco_fixture(tmp_path)
    data = dataset({"type": "coco-captions", "root": str(root), "per_caption": True, "image_size": 16})
    assert len(data) == 5
    assert [data[(k, k)]["caption"] for k in range(5)] == [
        "a dog.",
        "a brown dog runs",
        "two cats",
        "cats on a sofa",
        "a cat pair",
    ]
    assert data[3]["captions"] == ["two cats", "cats on a sofa", "a cat pair"]
    assert list(data.all_captions()) == ["a dog.", "a brown dog runs", "two cats", "cats on a sofa", "a cat pair"]


def test_coco_val_does_not_flip(tmp_path):
    root = coco_fixture(tmp_path)
    path = root / "val2014" / "COCO_val2014_000000000042.jpg"
    left_red = Image.new("RGB", (32, 32), (0, 0, 255))
    left_red.paste((255, 0, 0), (0, 0, 16, 32))
    left_red.save(path, format="PNG")  # lossless content under the .jpg name: PIL reads by content
    val = dataset({"type": "coco-captions", "root": str(root), "image_size": 32}, "val")
    for seed in range(8):
        assert val[(0, seed)]["image"][0, 0, 0] == 1.0


# ---------------------------------------------------------------------------------------------
# cub-200-text
# ---------------------------------------------------------------------------------------------
CUB_IMAGES = [
    ("1", "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", "1"),
    ("2", "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", "0"),
    ("3", "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", "1"),
]


def cub_fixture(root: Path, text_dir: str = "birds/text") -> Path:
    write_lines(root / "images.txt", [f"{image_id} {path}" for image_id, path, _ in CUB_IMAGES])
    write_lines(root / "train_test_split.txt", [f"{image_id} {flag}" for image_id, _, flag in CUB_IMAGES])
    for image_id, path, _ in CUB_IMAGES:
        write_image(root / "images" / path, size=(40, 30))
        lines = [f"This bird number {image_id} has a white belly and caption {k}" for k in range(10)]
        write_lines(root / text_dir / Path(path).with_suffix(".txt"), lines)
    return root


def test_cub_uses_the_official_image_level_split(tmp_path):
    root = cub_fixture(tmp_path)
    train = dataset({"type": "cub-200-text", "root": str(root), "image_size": 16})
    val = dataset({"type": "cub-200-text", "root": str(root), "image_size": 16}, "val")
    assert (len(train), len(val)) == (2, 1)
    assert train.images[1].name == "Laysan_Albatross_0002_1027.jpg"
    assert len(train.captions_of(0)) == 10 and train.captions_of(0)[0].startswith("this bird number 1 ")
    assert val.captions_of(0)[3] == "this bird number 2 has a white belly and caption 3"
    item = train[(1, 11)]
    assert item["image"].shape == (3, 16, 16) and item["caption"].startswith("this bird number 3")


def test_cub_reads_reed_et_al_text_c10_folder_when_told(tmp_path):
    root = cub_fixture(tmp_path, text_dir="text_c10")
    data = dataset({"type": "cub-200-text", "root": str(root), "text_dir": "text_c10"})
    assert len(data.captions_of(0)) == 10


# ---------------------------------------------------------------------------------------------
# mm-celeba-hq
# ---------------------------------------------------------------------------------------------
def celeba_fixture(root: Path, ids: dict[str, list], use_text_lists: bool = False) -> Path:
    for split_ids in ids.values():
        for image_id in split_ids:
            write_image(root / "CelebA-HQ-img" / f"{image_id}.jpg", size=(32, 32))
            write_lines(
                root / "celeba-caption" / f"{image_id}.txt",
                [f"The woman {image_id} has high cheekbones.", f"She is smiling, face {image_id}."],
            )
    for folder, split_ids in ids.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        if use_text_lists:
            write_lines(root / folder / "filenames.txt", [str(i) for i in split_ids])
        else:
            (root / folder / "filenames.pickle").write_bytes(pickle.dumps(split_ids, protocol=2))
    return root


def test_mm_celeba_hq_reads_pickled_id_lists(tmp_path):
    root = celeba_fixture(tmp_path, {"train": ["0", "1", "2"], "test": [3]})
    train = dataset({"type": "mm-celeba-hq", "root": str(root), "image_size": 16})
    val = dataset({"type": "mm-celeba-hq", "root": str(root), "image_size": 16}, "val")
    assert (len(train), len(val)) == (3, 1)
    assert val.images[0].name == "3.jpg"
    assert train.captions_of(2) == ["the woman 2 has high cheekbones.", "she is smiling, face 2."]
    assert train[(0, 1)]["image"].shape == (3, 16, 16)


def test_mm_celeba_hq_falls_back_to_text_id_lists(tmp_path):
    root = celeba_fixture(tmp_path, {"train": ["5", "6"], "test": ["7"]}, use_text_lists=True)
    data = dataset({"type": "mm-celeba-hq", "root": str(root)})
    assert [path.name for path in data.images] == ["5.jpg", "6.jpg"]


# ---------------------------------------------------------------------------------------------
# textcaps
# ---------------------------------------------------------------------------------------------
def textcaps_entry(image_id: str, caption: str | None, references: list[str]) -> dict:
    entry = {
        "image_id": image_id,
        "image_classes": ["Poster"],
        "image_width": 40,
        "image_height": 20,
        "set_name": "train",
        "image_name": image_id,
        "image_path": f"train/{image_id}.jpg",
        "reference_strs": references,
    }
    if caption is not None:
        entry.update({"caption_id": 1, "caption_str": caption, "caption_tokens": caption.split()})
    return entry


def textcaps_fixture(root: Path) -> Path:
    refs = ["A sign says STOP", "a red stop sign"]
    train = [
        textcaps_entry("0a1b2c", refs[0], refs),
        textcaps_entry("0a1b2c", refs[1], refs),
        textcaps_entry("ffee01", "A book titled Dune", ["A book titled Dune"]),
    ]
    val = [textcaps_entry("77aa00", None, ["A bottle of Coke", "a coke bottle"])]
    for image_id in ("0a1b2c", "ffee01", "77aa00"):
        write_image(root / "train_images" / f"{image_id}.jpg", size=(40, 20))
    for name, data in (("train", train), ("val", val)):
        (root / f"TextCaps_0.1_{name}.json").write_text(json.dumps({"dataset_name": "textcaps", "data": data}))
    return root


def test_textcaps_groups_captions_per_image(tmp_path):
    root = textcaps_fixture(tmp_path)
    train = dataset({"type": "textcaps", "root": str(root), "image_size": 16})
    assert len(train) == 2
    assert train.captions_of(0) == ["a sign says stop", "a red stop sign"]
    assert train.images[0] == root / "train_images" / "0a1b2c.jpg"
    assert train[(0, 4)]["image"].shape == (3, 16, 16)


def test_textcaps_val_takes_reference_strings_and_images_from_train_images(tmp_path):
    root = textcaps_fixture(tmp_path)
    val = dataset({"type": "textcaps", "root": str(root)}, "val")
    assert val.captions_of(0) == ["a bottle of coke", "a coke bottle"]
    assert val.images[0] == root / "train_images" / "77aa00.jpg"


def test_textcaps_default_transform_squashes_to_a_square(tmp_path):
    root = textcaps_fixture(tmp_path)
    half = Image.new("RGB", (40, 20), (0, 0, 255))
    half.paste((255, 0, 0), (0, 0, 10, 20))  # left quarter red
    half.save(root / "train_images" / "ffee01.jpg", format="PNG")
    item = dataset({"type": "textcaps", "root": str(root), "image_size": 20})[1]
    red = item["image"][0, 10] > 0.5  # one row: red where the squashed quarter lands
    assert red[:4].all() and not red[6:].any()


# ---------------------------------------------------------------------------------------------
# every format, batched
# ---------------------------------------------------------------------------------------------
def test_every_format_yields_batches_of_the_same_shape(tmp_path):
    tables = [
        {"type": "image-text-folder", "root": str(folder_fixture(tmp_path / "folder")), "val_file": "val.jsonl"},
        {"type": "coco-captions", "root": str(coco_fixture(tmp_path / "coco"))},
        {"type": "cub-200-text", "root": str(cub_fixture(tmp_path / "cub"))},
        {
            "type": "mm-celeba-hq",
            "root": str(celeba_fixture(tmp_path / "celeba", {"train": ["0", "1"], "test": ["2"]})),
        },
        {"type": "textcaps", "root": str(textcaps_fixture(tmp_path / "textcaps"))},
    ]
    for table in tables:
        data = dataset({**table, "image_size": 12})
        batch = collate([data[(0, 1)], data[(1, 2)]])
        assert batch["image"].shape == (2, 3, 12, 12), table["type"]
        assert batch["image"].dtype == torch.float32 and batch["skipped"] == []
        assert len(list(data.all_captions())) >= 2


@pytest.mark.parametrize("name", ["image-text-folder", "coco-captions", "cub-200-text", "mm-celeba-hq", "textcaps"])
def test_a_missing_root_names_the_folder_and_the_key(tmp_path, name):
    from lgvq_core.errors import DataError

    table = {"type": name, "root": str(tmp_path / "nowhere")}
    if name == "image-text-folder":
        table["val_fraction"] = 0.1
    with pytest.raises(DataError, match=r"nowhere.*data\.root"):
        dataset(table)
