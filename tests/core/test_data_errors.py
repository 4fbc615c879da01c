"""Bad data: every failure names its file and says what to do; skipped items are reported, never lost."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from lgvq_core.context import BuildContext
from lgvq_core.data.base import collate
from lgvq_core.data.celeba import build_mm_celeba_hq
from lgvq_core.data.coco import CocoCaptions
from lgvq_core.data.config import CocoCaptionsConfig, CubTextConfig, ImageTextFolderConfig, MMCelebAHQConfig
from lgvq_core.data.cub import CubText
from lgvq_core.data.files import load_name_list
from lgvq_core.data.folder import ImageTextFolder
from lgvq_core.errors import ConfigError, DataError
from lgvq_core.registry import build


def write_image(path: Path, size: tuple[int, int] = (20, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 120, 200)).save(path)
    return path


def folder(root: Path, images: list[str], skip_bad_items: bool = False, log=None) -> ImageTextFolder:
    lines = [json.dumps({"image": name, "captions": [f"caption of {name}"]}) for name in images]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = ImageTextFolderConfig(root=str(root), val_file="train.jsonl", image_size=8)
    return ImageTextFolder(config, split="train", skip_bad_items=skip_bad_items, log=log)


def cub(root: Path, skip_bad_items: bool = False) -> CubText:
    names = ["001.A/a_1.jpg", "001.A/a_2.jpg", "002.B/b_3.jpg"]
    (root / "images.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(names)))
    (root / "train_test_split.txt").write_text("".join(f"{k + 1} 1\n" for k in range(len(names))))
    for name in names:
        write_image(root / "images" / name)
        text = (root / "birds" / "text" / name).with_suffix(".txt")
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("a small bird\nthe bird is blue\n")
    return CubText(CubTextConfig(root=str(root), image_size=8), split="train", skip_bad_items=skip_bad_items)


# ---------------------------------------------------------------------------------------------
# bad items
# ---------------------------------------------------------------------------------------------
def test_a_corrupt_image_raises_a_data_error_naming_the_file(tmp_path):
    write_image(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\x00garbage, not an image" * 10)
    data = folder(tmp_path, ["good.png", "broken.jpg"])
    assert data[0]["image"].shape == (3, 8, 8)
    with pytest.raises(DataError, match=r"cannot read image file .*broken\.jpg.*train\.skip_bad_items = true"):
        data[1]


def test_a_truncated_jpeg_is_a_bad_image(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.jpg"):
        folder(tmp_path, ["cut.jpg"])[(0, 1)]


def test_a_missing_image_raises_a_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"image file not found: .*absent\.png; fix or remove"):
        folder(tmp_path, ["absent.png"])[0]


def test_a_missing_caption_file_raises_a_data_error_naming_it(tmp_path):
    data = cub(tmp_path)
    (tmp_path / "birds" / "text" / "001.A" / "a_2.txt").unlink()
    with pytest.raises(DataError, match=r"caption file not found: .*001\.A/a_2\.txt.*skip_bad_items"):
        data[1]
    with pytest.raises(DataError, match=r"a_2\.txt"):
        data.captions_of(1)


def test_an_empty_caption_file_is_a_bad_item(tmp_path):
    data = cub(tmp_path)
    (tmp_path / "birds" / "text" / "002.B" / "b_3.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"caption file .*b_3\.txt has no captions"):
        data[2]


def test_skipped_items_become_markers_that_collate_reports(tmp_path):
    data = cub(tmp_path, skip_bad_items=True)
    (tmp_path / "birds" / "text" / "001.A" / "a_2.txt").unlink()
    (tmp_path / "images" / "002.B" / "b_3.jpg").write_bytes(b"not a jpeg")
    items = [data[(0, 10)], data[(1, 11)], data[(2, 12)]]
    assert items[1]["index"] == 1 and "a_2.txt" in items[1]["error"]
    assert "skip_bad_items" not in items[1]["error"]  # the hint is for runs that do not skip yet
    assert set(items[2]) == {"index", "error"} and "b_3.jpg" in items[2]["error"]
    batch = collate(items)
    assert batch["image"].shape == (1, 3, 8, 8) and batch["index"] == [0]
    assert [index for index, _ in batch["skipped"]] == [1, 2]
    assert "a_2.txt" in batch["skipped"][0][1] and "b_3.jpg" in batch["skipped"][1][1]


def test_the_factory_takes_skip_bad_items_from_the_context(tmp_path):
    root = tmp_path / "celeba"
    (root / "train").mkdir(parents=True)
    (root / "celeba-caption").mkdir()
    (root / "CelebA-HQ-img").mkdir()
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(["0"]))
    (root / "celeba-caption" / "0.txt").write_text("a face\n")
    context = SimpleNamespace(split="train", skip_bad_items=True, log=print)
    data = build_mm_celeba_hq(MMCelebAHQConfig(root=str(root)), context)
    assert "0.jpg" in data[0]["error"]
    plain = build_mm_celeba_hq(MMCelebAHQConfig(root=str(root)), BuildContext(split="train"))
    with pytest.raises(DataError, match=r"0\.jpg"):
        plain[0]


def test_a_missing_coco_image_fails_as_its_item_and_is_not_dropped(tmp_path):
    annotations = {
        "images": [{"id": 5, "file_name": "COCO_train2014_000000000005.jpg"}],
        "annotations": [{"id": 1, "image_id": 5, "caption": "a cat"}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_text(json.dumps(annotations))
    (tmp_path / "train2014").mkdir()
    data = CocoCaptions(CocoCaptionsConfig(root=str(tmp_path)), split="train")
    assert len(data) == 1
    with pytest.raises(DataError, match=r"COCO_train2014_000000000005\.jpg"):
        data[0]


# ---------------------------------------------------------------------------------------------
# bad index files: always fatal, with the file (and line) named
# ---------------------------------------------------------------------------------------------
def test_a_malformed_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"image": "a.png", "captions": ["x"]}\n{"image": "b.png", captions}\n')
    config = ImageTextFolderConfig(root=str(tmp_path), val_file="train.jsonl")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid JSON"):
        ImageTextFolder(config, split="train")


def test_a_jsonl_line_without_captions_says_which_keys_to_give(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"image": "a.png", "text": "x"}\n')
    config = ImageTextFolderConfig(root=str(tmp_path), val_file="train.jsonl")
    with pytest.raises(DataError, match=r'train\.jsonl:1: give "captions"'):
        ImageTextFolder(config, split="train")


def test_a_coco_annotation_of_an_unknown_image_is_an_error(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_text(
        json.dumps({"images": [], "annotations": [{"image_id": 3, "caption": "x"}]})
    )
    with pytest.raises(DataError, match=r"annotations\[0\] refers to image id 3"):
        CocoCaptions(CocoCaptionsConfig(root=str(tmp_path)), split="train")


def test_a_missing_annotation_file_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"captions_val2014\.json; set data\.val_annotations"):
        CocoCaptions(CocoCaptionsConfig(root=str(tmp_path)), split="val")


def test_a_cub_image_without_a_split_line_is_an_error(tmp_path):
    cub(tmp_path)
    (tmp_path / "train_test_split.txt").write_text("1 1\n2 1\n")
    with pytest.raises(DataError, match=r"train_test_split\.txt: image id 3 has no line"):
        CubText(CubTextConfig(root=str(tmp_path)), split="train")


def test_image_text_folder_needs_exactly_one_way_to_make_the_val_split():
    with pytest.raises(ConfigError, match=r"val_fraction: give exactly one of val_file"):
        build("dataset", {"type": "image-text-folder", "root": "x"})
    with pytest.raises(ConfigError, match=r"val_fraction: give exactly one of val_file"):
        build("dataset", {"type": "image-text-folder", "root": "x", "val_file": "v.jsonl", "val_fraction": 0.1})


# ---------------------------------------------------------------------------------------------
# pickled id lists are read without running code
# ---------------------------------------------------------------------------------------------
class _MakesDirectory:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_pickle_that_calls_a_function_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps(["0", _MakesDirectory(str(marker))]))
    with pytest.raises(
        DataError, match=r"cannot read list of image ids .*filenames\.pickle: it refers to (posix|os)\.mkdir"
    ):
        load_name_list(path, "train_list")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [{"a": 1}, [1.5, 2.5], ["0", None]])
def test_a_pickle_of_anything_but_a_list_of_names_is_refused(tmp_path, payload):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError, match=r"filenames\.pickle"):
        load_name_list(path, "train_list")


def test_pickled_names_may_be_str_int_or_bytes(tmp_path):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps(["12", 13, b"14"], protocol=4))
    assert load_name_list(path, "train_list") == ["12", "13", "14"]


def test_python_2_pickles_of_str_names_are_read(tmp_path):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(b"\x80\x02]q\x00(U\x0212q\x01K\rU\x0214q\x02e.")  # Python 2: ['12', 13, '14']
    assert load_name_list(path, "train_list") == ["12", "13", "14"]


def test_a_missing_id_list_names_both_files_tried(tmp_path):
    with pytest.raises(DataError, match=r"filenames\.pickle \(nor .*filenames\.txt\); set data\.val_list"):
        load_name_list(tmp_path / "test" / "filenames.pickle", "val_list")


def test_a_missing_image_folder_names_its_key(tmp_path):
    cub(tmp_path)
    with pytest.raises(DataError, match=r"pictures; set data\.images_dir"):
        CubText(CubTextConfig(root=str(tmp_path), images_dir="pictures"), split="train")
