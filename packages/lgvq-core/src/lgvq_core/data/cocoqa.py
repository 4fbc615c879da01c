"""``coco-qa``: COCO-QA (Ren et al., 2015), questions with one-word answers on COCO 2014 images.

Layout under ``root`` (COCO-QA's release, with the COCO 2014 images beside it)::

    train/questions.txt  answers.txt  img_ids.txt  types.txt   one question per line, in step
    test/ ...                                                  (the val split)
    train2014/COCO_train2014_<id:012d>.jpg                     the train questions' images
    val2014/COCO_val2014_<id:012d>.jpg                         the test questions' images
    annotations/captions_<train|val>2014.json                  optional: COCO captions

Line ``n`` of the four files is one question: its text, its answer, the COCO id of its image and
its type (0 object, 1 number, 2 color, 3 location). An item is an image (in order of first
appearance) with all its questions. The four files must have the same number of lines, and every
question's image must be in the split's image folder (COCO-QA's train questions are on train2014
images, its test questions on val2014): either failure names the file and line.

Captions come from the COCO captions JSON when it exists; an image it lacks, or every image when
there is no JSON, takes its questions as its captions (text about the image for a text encoder).
Images are resized to squares by default rather than cropped: a crop could cut off what a
question asks about.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lgvq_core.data.annotations import QUESTION_TYPES, Question
from lgvq_core.data.base import config_options, normalize_captions, split_options
from lgvq_core.data.coco import read_coco_captions
from lgvq_core.data.config import CocoQAConfig
from lgvq_core.data.files import require_dir, require_file, resolve
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError

FILES: tuple[str, ...] = ("questions.txt", "answers.txt", "img_ids.txt", "types.txt")


def read_numbered_lines(path: Path, key: str) -> list[str]:
    """Every line of ``path`` (a trailing newline ends the last line; blank lines are kept, to be reported)."""
    require_file(path, key)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def read_coco_qa(folder: Path, key: str) -> list[tuple[int, Question]]:
    """``(image id, question)`` per line of the split's four files, in file order."""
    columns = [read_numbered_lines(folder / name, key) for name in FILES]
    counts = [len(column) for column in columns]
    if len(set(counts)) != 1:
        listed = ", ".join(f"{folder / name}: {count}" for name, count in zip(FILES, counts, strict=True))
        raise DataError(
            f"COCO-QA files of one split must have one line per question each, but the line counts differ ({listed})"
        )
    found = []
    for number, (text, answer, image_id, type_id) in enumerate(zip(*columns, strict=True), start=1):
        where = f"line {number} of {folder}"
        if not text.strip() or not answer.strip():
            raise DataError(f"{where}: empty question or answer ({FILES[0]}: {text!r}, {FILES[1]}: {answer!r})")
        image_id = image_id.strip()
        if not re.fullmatch(r"[0-9]{1,12}", image_id):  # ASCII digits only: "²" and "٩" pass isdigit()
            shown = image_id if len(image_id) <= 40 else f"{image_id[:20]}... ({len(image_id)} characters)"
            raise DataError(
                f"{folder / FILES[2]}: line {number} is {shown!r}, expected a COCO image id (1 to 12 digits 0-9)"
            )
        if len(answer.split()) != 1:
            raise DataError(
                f"{folder / FILES[1]}: line {number} is {answer.strip()!r}; COCO-QA answers are one word each"
            )
        if type_id.strip() not in {str(k) for k in range(len(QUESTION_TYPES))}:
            raise DataError(
                f"{folder / FILES[3]}: line {number} is {type_id!r}, expected 0 (object), 1 (number), 2 (color) or 3 (location)"
            )
        question = Question(text.strip(), answer.strip(), QUESTION_TYPES[int(type_id)])
        found.append((int(image_id), question))
    return found


class CocoQA(ListedImages):
    name = "coco-qa"
    ANNOTATION_KINDS = frozenset({"questions"})

    def __init__(self, config: CocoQAConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        prefix = "train" if split == "train" else "val"
        key = f"{prefix}_dir"
        folder = require_dir(resolve(root, getattr(config, key)), key)
        images_dir = require_dir(resolve(root, getattr(config, f"{prefix}_images")), f"{prefix}_images")
        pattern = getattr(config, f"{prefix}_image_name")
        in_split = {entry.name for entry in os.scandir(images_dir)}
        self.image_ids: list[int] = []
        self.image_questions: list[list[Question]] = []
        position: dict[int, int] = {}
        for number, (image_id, question) in enumerate(read_coco_qa(folder, key), start=1):
            if image_id not in position:
                name = pattern.format(id=image_id)
                if name not in in_split:
                    raise DataError(
                        f"{folder / FILES[2]}: line {number}: image {image_id} is not in the {split} split ({name} is not "
                        f"in {images_dir}); COCO-QA's train questions are on COCO train2014 images and its test questions "
                        f"on val2014: check data.{key} and data.{prefix}_images"
                    )
                position[image_id] = len(self.image_ids)
                self.image_ids.append(image_id)
                self.image_questions.append([])
            self.image_questions[position[image_id]].append(question)
        names = [pattern.format(id=image_id) for image_id in self.image_ids]
        captions = self._captions(root, prefix, names, config, log)
        super().__init__(
            images=[images_dir / name for name in names],
            captions=captions,
            source=str(folder),
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **config_options(config),
        )

    def _captions(self, root: Path, prefix: str, names: list[str], config: CocoQAConfig, log: Any) -> list[list[str]]:
        """COCO's captions of each image where the JSON has them, else the image's questions."""
        key = f"{prefix}_captions"
        path = resolve(root, getattr(config, key))
        coco: dict[str, list[str]] = {}
        if path.is_file():
            coco = {name: normalize_captions(found, config.lowercase) for name, found in read_coco_captions(path, key)}
        elif log is not None:
            log(f"{self.name}: {path} not found; each image's questions are its captions (set data.{key} for COCO's)")
        return [
            coco.get(name) or [q.text for q in questions]
            for name, questions in zip(names, self.image_questions, strict=True)
        ]

    def _raw_questions(self, index: int) -> list[Question]:
        return list(self.image_questions[self.image_of(index)])


def build_coco_qa(config: CocoQAConfig, context: Any) -> CocoQA:
    return CocoQA(config, **split_options(context))
