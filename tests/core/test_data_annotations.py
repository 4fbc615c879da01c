"""Optional dataset annotations: segmentation maps, questions and referring expressions.

The shapes data is checked against its own scene (masks against the drawn pixels, boxes against
the drawn extent, every question and phrase re-interpreted here to show its referent and answer
are unique); the real formats are read from tiny copies of their layouts written by each test.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lgvq_core.context import BuildContext
from lgvq_core.data.annotations import (
    QUESTION_TYPES,
    MissingAnnotationError,
    Question,
    Referring,
    mirror_words,
    missing_annotation_message,
)
from lgvq_core.data.celebamask import CLASSES as FACE_CLASSES
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes import ShapesDataset
from lgvq_core.data.shapes_captions import NUMBERS, PHRASES
from lgvq_core.data.shapes_questions import location_word
from lgvq_core.data.shapes_scene import (
    BACKGROUNDS,
    COLORS,
    KINDS,
    SEGMENTATION_CLASSES,
    SIZES,
    Scene,
    Shape,
    render_labels,
    render_scene,
)
from lgvq_core.errors import DataError
from lgvq_core.registry import build, get_registry
from lgvq_core.wordnet import INSTALL_HINT, noun_synsets, wordnet_available


def dataset(table: dict, split: str = "train"):
    return build("dataset", table, context=BuildContext(split=split, log=lambda message: None))


def shapes(split: str = "train", **options) -> ShapesDataset:
    return ShapesDataset(ShapesConfig(**{"image_size": 32, "num_train": 24, "num_val": 4, **options}), split=split)


def write_image(path: Path, size: tuple[int, int], color=(90, 90, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# the interface
# ---------------------------------------------------------------------------------------------
def test_a_dataset_without_an_annotation_names_the_datasets_that_have_it(tmp_path):
    write_image(tmp_path / "a.png", (8, 8))
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "a.png", "caption": "a gray square"}) + "\n")
    folder = dataset({"type": "image-text-folder", "root": str(tmp_path), "val_file": "train.jsonl", "image_size": 8})
    assert folder.annotation_kinds() == frozenset()
    with pytest.raises(MissingAnnotationError) as caught:
        folder.segmentation(0)
    assert str(caught.value) == (
        "dataset 'image-text-folder' has no 'segmentation' annotations; datasets with them: celebamask-hq, shapes"
    )
    with pytest.raises(MissingAnnotationError, match="no 'questions' annotations; datasets with them: coco-qa, shapes"):
        folder.questions(0)
    with pytest.raises(MissingAnnotationError, match="no 'referring' annotations; datasets with them: refcoco, shapes"):
        folder.referring((0, 3))
    # the same without building anything, as `lgvq check` knows it: from the registry
    registry = get_registry()
    assert "questions" not in registry.annotation_kinds("cub-200-text")
    assert registry.datasets_with("questions") == ["coco-qa", "shapes"]
    assert {"segmentation", "questions", "referring"} <= registry.annotation_kinds("shapes")
    # a dataset built without a registry still says where to look
    assert missing_annotation_message("image-text-folder", "segmentation") == (
        "dataset 'image-text-folder' has no 'segmentation' annotations; docs/datasets.md lists the datasets that have them"
    )


def test_config_classes_declare_what_their_datasets_have():
    from lgvq_core.data.celebamask import CelebAMaskHQ
    from lgvq_core.data.cocoqa import CocoQA
    from lgvq_core.data.refcoco import RefCoco

    for name, cls in [
        ("shapes", ShapesDataset),
        ("celebamask-hq", CelebAMaskHQ),
        ("coco-qa", CocoQA),
        ("refcoco", RefCoco),
    ]:
        assert get_registry().annotation_kinds(name) == cls.ANNOTATION_KINDS != frozenset(), name
    for name in ("image-text-folder", "coco-captions", "cub-200-text", "mm-celeba-hq", "textcaps"):
        assert get_registry().annotation_kinds(name) == frozenset(), name


def test_annotation_records_check_their_fields():
    assert Question("what color is the sky?", "blue", "color").type_id == 2
    assert [Question("q?", "a", t).type_id for t in QUESTION_TYPES] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="question type must be one of object, number, color, location"):
        Question("q?", "a", "yes/no")
    assert Referring("the cat", [0.25, 0.5, 0.75, 1.0]).box_pixels(8) == (2.0, 4.0, 6.0, 8.0)
    with pytest.raises(ValueError, match="a box is"):
        Referring("the cat", (0.5, 0.0, 0.25, 1.0))
    assert mirror_words("the leftmost cup, right of the left bowl") == "the rightmost cup, left of the right bowl"
    assert (
        mirror_words("leftover rice, rightly so, bright lights, leftwards")
        == "leftover rice, rightly so, bright lights, rightwards"
    )


# ---------------------------------------------------------------------------------------------
# shapes: segmentation
# ---------------------------------------------------------------------------------------------
def test_shapes_segmentation_of_a_hand_placed_square():
    square = Shape(kind="square", color="red", size="large", cx=0.5, cy=0.5, half=0.25)
    labels = np.asarray(render_labels(Scene(shapes=(square,), background="white", gradient=None), 8))
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[2:6, 2:6] = SEGMENTATION_CLASSES.index("square")  # the box 0.25..0.75 covers pixels 2..5 exactly
    np.testing.assert_array_equal(labels, expected)
    assert SEGMENTATION_CLASSES == ("background", "circle", "square", "triangle", "diamond", "star")


def test_shapes_masks_match_the_drawn_pixels():
    data = shapes()
    exact = total = 0
    for index in range(12):
        scene = data.scene(index)
        mask = data.segmentation(index).numpy()  # h w
        assert mask.shape == (32, 32) and data.segmentation(index).dtype == torch.long
        image = np.asarray(render_scene(scene, 32), dtype=np.int64)  # h w 3
        background = np.asarray(render_scene(Scene((), scene.background, scene.gradient), 32), dtype=np.int64)
        assert set(np.unique(mask)) == {0} | {SEGMENTATION_CLASSES.index(s.kind) for s in scene.shapes}
        near_any = np.zeros((32, 32), dtype=bool)
        for shape in scene.shapes:
            x0, y0, x1, y1 = (v * 32 for v in shape.box())
            near = np.zeros((32, 32), dtype=bool)
            near[max(int(y0) - 1, 0) : int(np.ceil(y1)) + 1, max(int(x0) - 1, 0) : int(np.ceil(x1)) + 1] = True
            near_any |= near
            color = np.asarray(COLORS[shape.color])
            to_shape = np.abs(image - color).sum(-1)
            to_background = np.abs(image - background).sum(-1)
            mine = near & (mask == SEGMENTATION_CLASSES.index(shape.kind))
            # a pixel labelled with the shape is mostly covered by it: its colour is nearer the shape's
            assert (to_shape[mine] <= to_background[mine] + 3).all()
            # a background pixel near the shape is mostly uncovered: its colour is nearer the background
            assert (to_background[near & (mask == 0)] <= to_shape[near & (mask == 0)] + 3).all()
            exact += int((to_shape[mine] == 0).sum())
            total += int(mine.sum())
        # far from every shape: background, drawn and labelled
        assert (mask[~near_any] == 0).all() and (image[~near_any] == background[~near_any]).all()
    assert exact / total > 0.75  # most shape pixels are fully covered: exactly the shape's colour


def test_shapes_annotations_are_deterministic_and_seed_dependent():
    first, second = shapes(), shapes()
    for index in range(6):
        assert first.questions(index) == second.questions(index)
        assert first.referring(index) == second.referring(index)
        assert torch.equal(first.segmentation(index), second.segmentation(index))
        # shapes is neither cropped nor flipped: a seeded key has the unseeded key's annotations
        assert first.questions((index, 99)) == first.questions(index)
        assert first.referring((index, 99)) == first.referring(index)
        assert torch.equal(first.segmentation((index, 99)), first.segmentation(index))
    other = shapes(seed=1)
    assert [other.questions(i) for i in range(6)] != [first.questions(i) for i in range(6)]
    assert [shapes("val").questions(i) for i in range(4)] != [first.questions(i) for i in range(4)]


# ---------------------------------------------------------------------------------------------
# shapes: questions and referring expressions, re-interpreted against the scene
# ---------------------------------------------------------------------------------------------
_RELATION_OF = {phrase: relation for relation, phrases in PHRASES.items() for phrase in phrases}
_RELATION_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _RELATION_OF), key=len, reverse=True)) + r")\b")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text)


def _matching(scene: Scene, words: list[str]) -> list[int]:
    """Shapes that have every colour, kind and size word among ``words``."""
    found = []
    for i, shape in enumerate(scene.shapes):
        kinds = [w for w in words if w in KINDS or (w.endswith("s") and w[:-1] in KINDS)]
        if all(w == shape.color for w in words if w in COLORS) and all(w == shape.size for w in words if w in SIZES):
            if all(w.rstrip("s") == shape.kind for w in kinds):
                found.append(i)
    return found


def _referents(scene: Scene, phrase: str) -> list[int]:
    """The shapes a phrase ("the circle left of the blue square", "the red object") can mean."""
    split = _RELATION_RE.split(phrase, maxsplit=1)
    if len(split) == 1:
        return _matching(scene, _words(phrase))
    head, relation, anchor_text = split
    anchors = _matching(scene, _words(anchor_text))
    assert len(anchors) == 1, f"the anchor of {phrase!r} is not unique"
    holds = {i for i, name, j in scene.relations() if name == _RELATION_OF[relation] and j == anchors[0]}
    return [i for i in _matching(scene, _words(head)) if i in holds]


def test_every_referring_expression_names_exactly_its_shape_and_box():
    data = shapes()
    relational = 0
    for index in range(len(data)):
        scene = data.scene(index)
        for expression in data.referring(index):
            assert _referents(scene, expression.text) == [expression.object_id], expression.text
            shape = scene.shapes[expression.object_id]
            assert expression.box == pytest.approx(shape.box())
            relational += bool(_RELATION_RE.search(expression.text))
            # the box holds the drawn shape (every pixel labelled with it), tightly (a star's thin tips
            # are less than half a pixel wide near the box: within two pixels)
            alone = np.asarray(render_labels(Scene((shape,), scene.background, None), 32))
            rows, cols = np.nonzero(alone)
            x0, y0, x1, y1 = expression.box_pixels(32)
            assert (
                x0 - 1 <= cols.min() and cols.max() + 1 <= x1 + 1 and y0 - 1 <= rows.min() and rows.max() + 1 <= y1 + 1
            )
            assert (
                cols.min() <= x0 + 2 and cols.max() + 1 >= x1 - 2 and rows.min() <= y0 + 2 and rows.max() + 1 >= y1 - 2
            )
    assert relational > 10


def test_every_question_has_one_answer_and_it_is_right():
    data = shapes()
    types = Counter()
    for index in range(len(data)):
        scene = data.scene(index)
        texts = [q.text for q in data.questions(index)]
        assert len(texts) == len(set(texts))
        for question in data.questions(index):
            types[question.type] += 1
            assert re.fullmatch(r"[a-z]+", question.answer), question
            text = question.text
            if question.type == "number":
                words = _words(text)
                count = len(scene.shapes) if "shapes" in words else len(_matching(scene, words))
                assert question.answer == NUMBERS[count], question
                continue
            if question.type == "color" and "background" in text:
                assert question.answer == scene.background
                continue
            subject = re.sub(
                r"^(what shape is|what is the color of|what color is|what is|where in the image is|where is)", "", text
            )
            referents = _referents(scene, subject.rstrip("?"))
            assert len(referents) == 1, question
            shape = scene.shapes[referents[0]]
            expected = {"object": shape.kind, "color": shape.color, "location": location_word(shape)}[question.type]
            assert question.answer == expected, question
    assert set(types) == set(QUESTION_TYPES) and min(types.values()) >= 5


def _shapes_answer_words() -> set[str]:
    data = shapes()
    found = {q.answer for index in range(len(data)) for q in data.questions(index)}
    # and every word the generator can answer with, seen or not
    return (
        found
        | set(KINDS)
        | set(COLORS)
        | set(BACKGROUNDS)
        | set(NUMBERS.values())
        | {"left", "right", "top", "bottom", "center"}
    )


@pytest.mark.skipif(not wordnet_available(), reason=INSTALL_HINT)
def test_every_shapes_answer_word_is_a_wordnet_noun():
    missing = sorted(word for word in _shapes_answer_words() if not noun_synsets(word))
    assert missing == []
    # the reader is the real WordNet 3.0: a published Wu-Palmer value
    dog, cat = noun_synsets("dog")[0], noun_synsets("cat")[0]
    assert dog.wup_similarity(cat) == pytest.approx(0.857, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# CelebAMask-HQ
# ---------------------------------------------------------------------------------------------
def celebamask_fixture(root: Path, captions: bool = True) -> Path:
    """Images 0, 1 (train) and 2001 (val; mask folder 1), 16x16 images, 8x8 masks."""
    for image_id in (0, 1, 2001):
        write_image(root / "CelebA-HQ-img" / f"{image_id}.jpg", (16, 16))
    parts = {
        "skin": (slice(2, 6), slice(2, 6)),
        "nose": (slice(3, 5), slice(4, 6)),  # painted over the skin, right of the middle
        "hair": (slice(0, 3), slice(0, 8)),  # over the skin's top row
    }
    for image_id in (0, 2001):
        for part, (rows, cols) in parts.items():
            mask = np.zeros((8, 8, 3), dtype=np.uint8)
            mask[rows, cols] = 255
            path = root / "CelebAMask-HQ-mask-anno" / str(image_id // 2000) / f"{image_id:05d}_{part}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(path)
    (root / "train").mkdir()
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(["0", "1"], protocol=2))
    (root / "test").mkdir()
    (root / "test" / "filenames.txt").write_text("2001\n")
    if captions:
        for image_id in (0, 1, 2001):
            path = root / "celeba-caption" / f"{image_id}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"The woman {image_id} has brown hair.\nShe is smiling.\n")
    else:
        rows = ["3", "Brown_Hair Smiling Male", "0.jpg 1 1 -1", "1.jpg -1 -1 -1", "2001.jpg -1 1 1"]
        (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(rows) + "\n")
    return root


def _face_labels() -> np.ndarray:
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[2:6, 2:6] = FACE_CLASSES.index("skin")
    labels[3:5, 4:6] = FACE_CLASSES.index("nose")
    labels[0:3, 0:8] = FACE_CLASSES.index("hair")
    return labels


def test_celebamask_hq_merges_part_masks_to_the_19_classes(tmp_path):
    root = celebamask_fixture(tmp_path)
    table = {"type": "celebamask-hq", "root": str(root), "image_size": 16}
    train, val = dataset(table), dataset(table, "val")
    assert (len(train), len(val)) == (2, 1)
    assert len(FACE_CLASSES) == 19 and FACE_CLASSES[:4] == ("background", "skin", "nose", "eye_g")
    assert FACE_CLASSES[-1] == "cloth" and train.segmentation_classes() == FACE_CLASSES
    # 8x8 masks on 16x16 images: every mask pixel covers 2x2 image pixels
    expected = np.kron(_face_labels(), np.ones((2, 2), dtype=np.int64))
    np.testing.assert_array_equal(train.segmentation(0).numpy(), expected)
    np.testing.assert_array_equal(val.segmentation(0).numpy(), expected)  # id 2001 lives in mask folder 1
    assert train.captions_of(0) == ["the woman 0 has brown hair.", "she is smiling."]
    assert train[0]["image"].shape == (3, 16, 16) and train.annotation_kinds() == {"segmentation"}
    with pytest.raises(
        DataError, match=r"no part masks of image 1 in .*CelebAMask-HQ-mask-anno/0 \(expected 00001_<part>\.png\)"
    ):
        train.segmentation(1)
    small = dataset({**table, "image_size": 8})
    np.testing.assert_array_equal(small.segmentation(0).numpy(), _face_labels())


def test_celebamask_hq_captions_from_attributes_without_mm_celeba_hq(tmp_path):
    root = celebamask_fixture(tmp_path, captions=False)
    train = dataset({"type": "celebamask-hq", "root": str(root), "image_size": 8})
    assert [train.captions_of(i) for i in range(2)] == [["a face: brown hair, smiling"], ["a face"]]
    (root / "CelebAMask-HQ-attribute-anno.txt").unlink()
    with pytest.raises(
        DataError, match=r"no captions for celebamask-hq: neither .*celeba-caption .* nor .*attribute-anno"
    ):
        dataset({"type": "celebamask-hq", "root": str(root), "image_size": 8})


def test_celebamask_hq_bad_masks_and_ids(tmp_path):
    root = celebamask_fixture(tmp_path)
    Image.new("L", (4, 4), 255).save(root / "CelebAMask-HQ-mask-anno" / "0" / "00000_cloth.png")
    data = dataset({"type": "celebamask-hq", "root": str(root), "image_size": 8})
    with pytest.raises(DataError, match=r"mask file .*00000_cloth\.png is 4x4, the other masks of image 0 are 8x8"):
        data.segmentation(0)
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(["0", "../../etc/passwd"], protocol=2))
    with pytest.raises(
        DataError, match=r"filenames\.pickle: entry 1 is '\.\./\.\./etc/passwd', expected a CelebA-HQ image number"
    ):
        dataset({"type": "celebamask-hq", "root": str(root), "image_size": 8})


def test_a_flipped_item_flips_its_mask_with_its_image(tmp_path):
    root = celebamask_fixture(tmp_path)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[np.kron(_face_labels(), np.ones((2, 2), dtype=np.int64)) == FACE_CLASSES.index("nose")] = 255
    Image.fromarray(image).save(root / "CelebA-HQ-img" / "0.png")
    table = {"type": "celebamask-hq", "root": str(root), "image_ext": ".png", "image_size": 16}
    data = dataset({**table, "train_transform": "resize-center-crop-flip"})
    nose = FACE_CLASSES.index("nose")
    flips = 0
    for seed in range(12):
        picture = data[(0, seed)]["image"]  # 3 h w, the nose white on black
        mask = data.segmentation((0, seed))
        assert torch.equal(mask == nose, picture[0] > 0), seed
        flipped = data.placement((0, seed))[1].flip
        assert (mask[6, 8:12] == nose).all() != flipped and (mask[6, 4:8] == nose).all() == flipped
        flips += flipped
    assert 0 < flips < 12


# ---------------------------------------------------------------------------------------------
# COCO-QA
# ---------------------------------------------------------------------------------------------
COCO_QA_TRAIN = [
    ("what is the color of the bus?", "red", 9, 2),
    ("how many dogs are on the couch?", "two", 139, 1),
    ("what is sitting on the bench?", "cat", 9, 0),
    ("where is the cat sitting?", "bench", 9, 3),
]


def coco_qa_fixture(root: Path, rows=COCO_QA_TRAIN) -> Path:
    folder = root / "train"
    folder.mkdir(parents=True, exist_ok=True)
    for name, column in zip(("questions", "answers", "img_ids", "types"), zip(*rows, strict=True), strict=True):
        (folder / f"{name}.txt").write_text("".join(f"{value}\n" for value in column))
    for image_id in (9, 139):
        write_image(root / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", (20, 12))
    write_image(root / "val2014" / "COCO_val2014_000000000042.jpg", (20, 12))
    return root


def test_coco_qa_reads_questions_per_image(tmp_path):
    root = coco_qa_fixture(tmp_path)
    data = dataset({"type": "coco-qa", "root": str(root), "image_size": 8})
    assert len(data) == 2 and data.image_ids == [9, 139]
    assert data.questions(0) == [
        Question("what is the color of the bus?", "red", "color"),
        Question("what is sitting on the bench?", "cat", "object"),
        Question("where is the cat sitting?", "bench", "location"),
    ]
    assert data.questions((1, 5)) == [Question("how many dogs are on the couch?", "two", "number")]
    assert data.captions_of(1) == ["how many dogs are on the couch?"]  # no COCO captions: the questions
    assert data[1]["image"].shape == (3, 8, 8) and data.image_path(1).name == "COCO_train2014_000000000139.jpg"
    annotations = {
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg"}],
        "annotations": [{"image_id": 9, "caption": "A red bus by a Bench."}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps(annotations))
    with_captions = dataset({"type": "coco-qa", "root": str(root), "image_size": 8})
    assert with_captions.captions_of(0) == ["a red bus by a bench."]
    assert with_captions.captions_of(1) == ["how many dogs are on the couch?"]


def test_coco_qa_line_count_mismatch_names_the_files_and_counts(tmp_path):
    root = coco_qa_fixture(tmp_path)
    (root / "train" / "answers.txt").write_text("red\ntwo\ncat\n")
    with pytest.raises(DataError) as caught:
        dataset({"type": "coco-qa", "root": str(root), "image_size": 8})
    message = str(caught.value)
    for name, count in (("questions.txt", 4), ("answers.txt", 3), ("img_ids.txt", 4), ("types.txt", 4)):
        assert f"{root / 'train' / name}: {count}" in message


def test_coco_qa_question_on_an_image_outside_the_split_names_the_line(tmp_path):
    rows = [*COCO_QA_TRAIN[:2], ("what is on the table?", "cake", 42, 0)]  # 42 is a val2014 image
    root = coco_qa_fixture(tmp_path, rows)
    with pytest.raises(
        DataError,
        match=r"img_ids\.txt: line 3: image 42 is not in the train split \(COCO_train2014_000000000042\.jpg is not in .*train2014\)",
    ):
        dataset({"type": "coco-qa", "root": str(root), "image_size": 8})


def test_coco_qa_bad_type_and_id_lines(tmp_path):
    root = coco_qa_fixture(tmp_path, [*COCO_QA_TRAIN[:1], ("is it?", "yes", 9, 4)])
    with pytest.raises(
        DataError,
        match=r"types\.txt: line 2 is '4', expected 0 \(object\), 1 \(number\), 2 \(color\) or 3 \(location\)",
    ):
        dataset({"type": "coco-qa", "root": str(root), "image_size": 8})
    root = coco_qa_fixture(tmp_path / "b", [("what?", "cat", "nine", 0)])
    with pytest.raises(DataError, match=r"img_ids\.txt: line 1 is 'nine', expected a COCO image id"):
        dataset({"type": "coco-qa", "root": str(root), "image_size": 8})


@pytest.mark.parametrize(
    ("image_id", "shown"),
    [("\u00b2", "'\u00b2'"), ("\u0669", "'\u0669'"), ("9" * 5000, "'99999999999999999999... (5000 characters)'")],
    ids=["superscript-two", "arabic-indic-nine", "5000-digits"],
)
def test_coco_qa_image_ids_are_ascii_digits(tmp_path, image_id, shown):
    root = coco_qa_fixture(tmp_path, [("what?", "cat", image_id, 0)])
    with pytest.raises(DataError) as caught:
        dataset({"type": "coco-qa", "root": str(root), "image_size": 8})
    assert str(caught.value) == (
        f"{root / 'train' / 'img_ids.txt'}: line 1 is {shown}, expected a COCO image id (1 to 12 digits 0-9)"
    )


def test_coco_qa_answers_are_one_word(tmp_path):
    root = coco_qa_fixture(tmp_path, [*COCO_QA_TRAIN[:1], ("what is it?", "a red bus", 9, 0)])
    with pytest.raises(DataError, match=r"answers\.txt: line 2 is 'a red bus'; COCO-QA answers are one word each"):
        dataset({"type": "coco-qa", "root": str(root), "image_size": 8})


# ---------------------------------------------------------------------------------------------
# RefCOCO
# ---------------------------------------------------------------------------------------------
def refcoco_fixture(root: Path, refs=None) -> Path:
    data = root / "refcoco"
    data.mkdir(parents=True)
    images = [
        {"id": 5, "file_name": "COCO_train2014_000000000005.jpg", "width": 40, "height": 20},
        {"id": 6, "file_name": "COCO_train2014_000000000006.jpg", "width": 20, "height": 20},
    ]
    annotations = [
        {"id": 100, "image_id": 5, "bbox": [4, 2, 16, 10], "category_id": 1},
        {"id": 101, "image_id": 5, "bbox": [24, 10, 12, 8], "category_id": 2},
        {"id": 200, "image_id": 6, "bbox": [0, 0, 10, 20], "category_id": 1},
    ]
    (data / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    if refs is None:
        refs = [
            {"ref_id": 0, "ann_id": 100, "image_id": 5, "split": "train", "category_id": 1,
             "sentences": [{"sent": "man on left", "raw": "Man on left."}, {"sent": "guy in red", "raw": "guy in red"}]},
            {"ref_id": 1, "ann_id": 101, "image_id": 5, "split": "train", "category_id": 2,
             "sentences": [{"sent": "the dog", "raw": "The dog"}]},
            {"ref_id": 2, "ann_id": 200, "image_id": 6, "split": "testA", "category_id": 1,
             "sentences": [{"sent": "left person", "raw": "left person"}]},
        ]  # fmt: skip
    (data / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    images_dir = root / "images" / "mscoco" / "images" / "train2014"
    canvas = np.zeros((20, 40, 3), dtype=np.uint8)
    canvas[2:12, 4:20] = (255, 0, 0)  # annotation 100, drawn where its bbox says
    images_dir.mkdir(parents=True)
    Image.fromarray(canvas).save(images_dir / images[0]["file_name"])
    write_image(images_dir / images[1]["file_name"], (20, 20))
    return root


def test_refcoco_reads_refs_with_boxes_from_instances(tmp_path):
    root = refcoco_fixture(tmp_path)
    table = {"type": "refcoco", "root": str(root), "image_size": 8}
    train, test_a = dataset(table), dataset({**table, "val_split": "testA"}, "val")
    assert (len(train), len(test_a)) == (1, 1)
    found = train.referring(0)
    assert [(r.text, r.object_id) for r in found] == [("man on left", 100), ("guy in red", 100), ("the dog", 101)]
    assert [r.box for r in found] == [
        pytest.approx((0.1, 0.1, 0.5, 0.6)),  # [4, 2, 16, 10] on a 40x20 image
        pytest.approx((0.1, 0.1, 0.5, 0.6)),
        pytest.approx((0.6, 0.5, 0.9, 0.9)),
    ]
    assert train.captions_of(0) == ["man on left", "guy in red", "the dog"]
    assert test_a.referring(0) == [Referring("left person", (0.0, 0.0, 0.5, 1.0), 200)]
    assert train[0]["image"].shape == (3, 8, 8)


def test_a_flipped_refcoco_item_mirrors_its_boxes_and_words(tmp_path):
    root = refcoco_fixture(tmp_path)
    table = {"type": "refcoco", "root": str(root), "image_size": 20, "val_transform": "resize-center-crop"}
    data = dataset({**table, "train_transform": "resize-center-crop-flip"})
    seen = set()
    for seed in range(10):
        flipped = data.placement((0, seed))[1].flip
        seen.add(flipped)
        first = data.referring((0, seed))[0]
        red = data[(0, seed)]["image"][0] > 0.5  # h w: annotation 100's pixels
        rows, cols = np.nonzero(red.numpy())
        x0, y0, x1, y1 = first.box_pixels(20)
        assert (x0, y0, x1, y1) == pytest.approx((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1), abs=1)
        assert first.text == ("man on right" if flipped else "man on left")
    assert seen == {True, False}
    # unseeded: the val transform, a centre crop (x 10..30 of 40) that keeps part of the dog: clipped
    assert data.referring(0)[2].box == pytest.approx(((24 - 10) / 20, 0.5, 1.0, 0.9))


def test_refcoco_ref_with_a_missing_annotation_id_is_named(tmp_path):
    refs = [{"ref_id": 7, "ann_id": 999, "image_id": 5, "split": "train", "sentences": [{"sent": "it"}]}]
    root = refcoco_fixture(tmp_path, refs)
    with pytest.raises(
        DataError, match=r"refs\(unc\)\.p: ref 0 \(ref_id 7\) names annotation id 999, which .*instances\.json lacks"
    ):
        dataset({"type": "refcoco", "root": str(root), "image_size": 8})


def _refs(**changes) -> list[dict]:
    ref = {"ref_id": 3, "ann_id": 100, "image_id": 5, "split": "train", "sentences": [{"sent": "the man"}]}
    return [{**ref, **changes}]


@pytest.mark.parametrize(
    ("refs", "annotation", "message"),
    [
        (
            None,
            {"bbox": [4, 2, float("nan"), 10]},
            r"annotations\[0\] needs a whole-number 'id' and a 'bbox' .* finite",
        ),
        (None, {"bbox": [4, 2, float("inf"), 10]}, r"annotations\[0\] .*got id 100 and bbox \[4, 2, inf, 10\]"),
        (None, {"id": [1, 2]}, r"annotations\[0\] needs a whole-number 'id'.*got id \[1, 2\]"),
        (_refs(ann_id="100"), None, r"ref 0 \(ref_id 3\): 'ann_id' must be a whole number, got '100'"),
        (_refs(image_id=[5]), None, r"ref 0 \(ref_id 3\): 'image_id' must be a whole number, got \[5\]"),
        (_refs(split=["train"]), None, r"ref 0 \(ref_id 3\): 'split' must be one name .*got \['train'\]"),
    ],
    ids=["nan-box", "infinite-width", "unhashable-annotation-id", "string-ann-id", "list-image-id", "list-split"],
)
def test_refcoco_bad_ids_boxes_and_splits_are_named(tmp_path, refs, annotation, message):
    root = refcoco_fixture(tmp_path, refs)
    if annotation is not None:
        path = root / "refcoco" / "instances.json"
        instances = json.loads(path.read_text())
        instances["annotations"][0].update(annotation)
        path.write_text(json.dumps(instances))
    with pytest.raises(DataError, match=message):
        dataset({"type": "refcoco", "root": str(root), "image_size": 8})


class _Payload:
    """Unpickling this would create the marker file: a pickle that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_refs_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    root = refcoco_fixture(tmp_path / "data")
    (root / "refcoco" / "refs(unc).p").write_bytes(
        pickle.dumps([{"ref_id": 0, "payload": _Payload(marker)}], protocol=2)
    )
    with pytest.raises(DataError, match=r"cannot read refs file .*refs\(unc\)\.p: it refers to .*; only plain data"):
        dataset({"type": "refcoco", "root": str(root), "image_size": 8})
    assert not marker.exists()


def test_refcoco_image_paths_never_leave_the_image_folder(tmp_path):
    root = refcoco_fixture(tmp_path)
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    instances["images"][0]["file_name"] = "../../../../secret.jpg"
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    with pytest.raises(
        DataError,
        match=r"instances\.json: image 5: the path '\.\./\.\./\.\./\.\./secret\.jpg' leaves the dataset folder",
    ):
        dataset({"type": "refcoco", "root": str(root), "image_size": 8})


def test_coco_qa_image_name_pattern_is_checked(tmp_path):
    from lgvq_core.errors import ConfigError

    root = coco_qa_fixture(tmp_path)
    for pattern in ("COCO_{idx}.jpg", "../{id}.jpg", "fixed.jpg"):
        with pytest.raises(ConfigError, match=r"train_image_name: must be a file name"):
            dataset({"type": "coco-qa", "root": str(root), "train_image_name": pattern})


def test_config_classes_declare_the_label_classes_their_maps_have():
    from lgvq_core.data.celebamask import CLASSES
    from lgvq_core.data.config import CelebAMaskHQConfig, ShapesConfig
    from lgvq_core.data.shapes_scene import SEGMENTATION_CLASSES

    assert ShapesConfig.segmentation_classes == len(SEGMENTATION_CLASSES)
    assert CelebAMaskHQConfig.segmentation_classes == len(CLASSES) == 19
