"""Index files cannot make a run read outside the data folder: absolute and climbing paths are
refused naming the file and line, or skipped and reported with train.skip_bad_items."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from PIL import Image

from lgvq_core.data.base import collate
from lgvq_core.data.celeba import MMCelebAHQ
from lgvq_core.data.coco import CocoCaptions
from lgvq_core.data.config import CocoCaptionsConfig, CubTextConfig, ImageTextFolderConfig, MMCelebAHQConfig
from lgvq_core.data.cub import CubText
from lgvq_core.data.folder import ImageTextFolder
from lgvq_core.data.inside_root import escape_problem
from lgvq_core.errors import DataError


def write_image(path: Path, color=(40, 120, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), color).save(path)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    """An image outside every data folder: a run must never read it."""
    return write_image(tmp_path / "private" / "secret.png", color=(255, 0, 0))


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("a/b.jpg", None),
        ("a/../b.jpg", None),
        ("./a.jpg", None),
        ("..", "climbs out with '..'"),
        ("../x.jpg", "climbs out with '..'"),
        ("a/../../x.jpg", "climbs out with '..'"),
        ("/etc/passwd", "is absolute"),
        ("~/x.jpg", "is absolute"),
        ("", "is empty"),
    ],
)
def test_escape_problem_is_decided_on_the_path_as_written(path, problem):
    assert escape_problem(path) == problem


def _folder(tmp_path: Path, escaping: str, skip: bool) -> ImageTextFolder:
    root = tmp_path / "data"
    write_image(root / "img" / "ok.png")
    lines = [
        json.dumps({"image": "img/ok.png", "caption": "a blue square"}),
        "",
        json.dumps({"image": escaping, "caption": "a red square"}),
    ]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = ImageTextFolderConfig(root=str(root), val_file="train.jsonl", image_size=8)
    return ImageTextFolder(config, split="train", skip_bad_items=skip)


@pytest.mark.parametrize("kind", ["climbing", "absolute"])
def test_image_text_folder_refuses_a_path_outside_root_naming_file_and_line(tmp_path, secret, kind):
    escaping = "../private/secret.png" if kind == "climbing" else str(secret)
    with pytest.raises(DataError) as info:
        _folder(tmp_path, escaping, skip=False)
    message = str(info.value)
    assert f"{tmp_path / 'data' / 'train.jsonl'}:3:" in message
    assert f"the image path {escaping!r} leaves the dataset folder" in message
    assert "train.skip_bad_items = true" in message


def test_skip_bad_items_skips_an_escaping_path_with_the_same_report_as_other_bad_items(tmp_path, secret):
    data = _folder(tmp_path, "img/../../private/secret.png", skip=True)
    assert len(data) == 2
    items = [data[0], data[1]]
    assert items[0]["image"].shape == (3, 8, 8)
    batch = collate(items)
    assert batch["image"].shape[0] == 1
    ((index, message),) = batch["skipped"]
    assert index == 1 and "train.jsonl:3:" in message and "leaves the dataset folder" in message


def test_a_symlink_inside_the_root_is_the_owners_choice_and_is_followed(tmp_path, secret):
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(secret.parent, root / "linked")
    (root / "train.jsonl").write_text(json.dumps({"image": "linked/secret.png", "caption": "red"}) + "\n")
    config = ImageTextFolderConfig(root=str(root), val_file="train.jsonl", image_size=8)
    data = ImageTextFolder(config, split="train")
    assert float(data[0]["image"][0].mean()) == pytest.approx(1.0)  # the red image, read through the link


def test_coco_refuses_a_file_name_outside_the_images_folder(tmp_path, secret):
    root = tmp_path / "coco"
    write_image(root / "train2014" / "a.jpg")
    (root / "annotations").mkdir(parents=True)
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../../private/secret.png"}]
    annotations = [{"image_id": 1, "caption": "a square"}, {"image_id": 2, "caption": "a secret"}]
    path = root / "annotations" / "captions_train2014.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    config = CocoCaptionsConfig(root=str(root), image_size=8)
    with pytest.raises(DataError, match=r"captions_train2014\.json: images\[1\]\.file_name: the image path .*secret"):
        CocoCaptions(config, split="train")
    data = CocoCaptions(config, split="train", skip_bad_items=True)
    assert "error" in data[1] and "leaves the dataset folder" in data[1]["error"]


def test_cub_images_txt_cannot_climb_out_and_names_its_line(tmp_path, secret):
    root = tmp_path / "CUB_200_2011"
    write_image(root / "images" / "001.A" / "a.jpg")
    text = root / "birds" / "text" / "001.A" / "a.txt"
    text.parent.mkdir(parents=True)
    text.write_text("a small bird\n")
    (root / "images.txt").write_text("1 001.A/a.jpg\n2 ../../private/secret.png\n")
    (root / "train_test_split.txt").write_text("1 1\n2 1\n")
    config = CubTextConfig(root=str(root), image_size=8)
    with pytest.raises(DataError, match=r"images\.txt:2: the image path '\.\./\.\./private/secret\.png'"):
        CubText(config, split="train")
    data = CubText(config, split="train", skip_bad_items=True)
    assert data[0]["image"].shape == (3, 8, 8)
    assert "images.txt:2" in data[1]["error"]
    assert list(data.all_captions()) == ["a small bird"]  # the refused item's caption file is never read


def test_mm_celeba_hq_ids_cannot_climb_out_and_the_default_folder_is_the_archives(tmp_path, secret):
    root = tmp_path / "celeba"
    write_image(root / "CelebA-HQ-img" / "0.jpg")
    (root / "celeba-caption").mkdir(parents=True)
    (root / "celeba-caption" / "0.txt").write_text("a face\n")
    (root / "train").mkdir()
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(["0", "../../private/secret"]))
    config = MMCelebAHQConfig(root=str(root), image_size=8)
    assert config.images_dir == "CelebA-HQ-img"
    with pytest.raises(DataError, match=r"filenames\.pickle: entry 1: the image path '\.\./\.\./private/secret\.jpg'"):
        MMCelebAHQ(config, split="train")
    data = MMCelebAHQ(config, split="train", skip_bad_items=True)
    assert data[0]["image"].shape == (3, 8, 8) and "entry 1" in data[1]["error"]
