"""``refcoco``: RefCOCO, RefCOCO+ and RefCOCOg in the layout of the ``refer`` toolkit.

Layout under ``root`` (refer's ``data`` folder)::

    refcoco/refs(unc).p                       a pickled list of refs, one per referred object:
                                              ref_id, ann_id, image_id, split, sentences [{sent, raw}]
    refcoco/instances.json                    COCO-style images (id, file_name, width, height) and
                                              annotations (id, image_id, bbox [x, y, w, h] in pixels)
    images/mscoco/images/train2014/<file_name>

The refs pickle is read without running code from it (only plain data is accepted: a pickle that
refers to any class or function is refused). An item is an image with at least one ref of the
split; its referring expressions are every sentence of those refs, each with its ref's box
(``instances.json``'s ``bbox`` of ``ann_id``, divided by the image's width and height). Its
captions are the same sentences. A ref whose ``ann_id`` or ``image_id`` the instances file lacks,
and an image ``file_name`` that leads outside the image folder, are errors naming them.

Images are resized to squares by default rather than cropped, so no box is cut.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lgvq_core.data.annotations import Referring
from lgvq_core.data.base import config_options, split_options
from lgvq_core.data.config import RefCocoConfig
from lgvq_core.data.files import read_json, read_plain_pickle, require_dir, require_file, resolve
from lgvq_core.data.inside_root import join_inside
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError


def _number(value: Any) -> bool:
    """A finite int or float (NaN and infinity are not coordinates)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _id(value: Any) -> bool:
    """COCO ids are whole numbers."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_instances(path: Path) -> tuple[dict[Any, dict[str, Any]], dict[Any, dict[str, Any]]]:
    """``(images by id, annotations by id)`` of a COCO instances file, checked."""
    data = read_json(path, "instances_file")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise DataError(f"{path} is not a COCO instances file: expected 'images' and 'annotations' lists")
    images = {}
    for number, image in enumerate(data["images"]):
        if (
            not isinstance(image, dict)
            or not _id(image.get("id"))
            or not isinstance(image.get("file_name"), str)
            or not all(_number(image.get(k)) and image[k] > 0 for k in ("width", "height"))
        ):
            raise DataError(
                f"{path}: images[{number}] needs a whole-number 'id', a 'file_name' and a positive, finite 'width' "
                "and 'height'"
            )
        images[image.get("id")] = image
    annotations = {}
    for number, annotation in enumerate(data["annotations"]):
        box = annotation.get("bbox") if isinstance(annotation, dict) else None
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(_number(v) for v in box)
            or box[2] <= 0
            or box[3] <= 0
            or not _id(annotation.get("id"))
        ):
            raise DataError(
                f"{path}: annotations[{number}] needs a whole-number 'id' and a 'bbox' [x, y, width, height] of "
                f"finite numbers with positive sides, got id {annotation.get('id')!r} and bbox {box!r}"
            )
        annotations[annotation.get("id")] = annotation
    return images, annotations


def read_refs(path: Path) -> list[dict[str, Any]]:
    """The refs pickle: a list of dicts with ``ann_id``, ``image_id``, ``split`` and ``sentences``."""
    require_file(path, "refs_file")
    refs = read_plain_pickle(path, "refs file")
    if not isinstance(refs, list):
        raise DataError(f"{path} holds a {type(refs).__name__}, expected a list of refs")
    for position, ref in enumerate(refs):
        if not isinstance(ref, dict) or not all(k in ref for k in ("ann_id", "image_id", "split", "sentences")):
            raise DataError(f"{path}: ref {position} is not a dict with 'ann_id', 'image_id', 'split' and 'sentences'")
        where = f"{path}: ref {position} (ref_id {ref.get('ref_id')!r})"
        for key in ("ann_id", "image_id"):
            if not _id(ref[key]):
                raise DataError(f"{where}: {key!r} must be a whole number, got {ref[key]!r}")
        if not isinstance(ref["split"], str):
            raise DataError(f"{where}: 'split' must be one name such as 'train' or 'testA', got {ref['split']!r}")
        sentences = ref["sentences"]
        if not isinstance(sentences, list) or not all(
            isinstance(s, dict) and isinstance(s.get("sent", s.get("raw")), str) for s in sentences
        ):
            raise DataError(
                f"{path}: ref {position} (ref_id {ref.get('ref_id')!r}): 'sentences' must be a list of {{'sent': text}}"
            )
    return refs


class RefCoco(ListedImages):
    name = "refcoco"
    ANNOTATION_KINDS = frozenset({"referring"})

    def __init__(self, config: RefCocoConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        refs_path = resolve(root, config.refs_file)
        instances_path = resolve(root, config.instances_file)
        images_dir = require_dir(resolve(root, config.images_dir), "images_dir")
        wanted = config.train_split if split == "train" else config.val_split
        refs = read_refs(refs_path)
        images, annotations = read_instances(instances_path)
        order: dict[Any, int] = {}
        self.expressions: list[list[Referring]] = []
        paths: list[Path] = []
        for position, ref in enumerate(refs):
            if ref["split"] != wanted:
                continue
            where = f"{refs_path}: ref {position} (ref_id {ref.get('ref_id')!r})"
            annotation = annotations.get(ref["ann_id"])
            if annotation is None:
                raise DataError(
                    f"{where} names annotation id {ref['ann_id']!r}, which {instances_path} lacks; the refs file and the "
                    "instances file must come from the same release (one folder of refer's data)"
                )
            image = images.get(ref["image_id"])
            if image is None:
                raise DataError(f"{where} names image id {ref['image_id']!r}, which {instances_path} lacks")
            if ref["image_id"] not in order:
                order[ref["image_id"]] = len(paths)
                paths.append(
                    join_inside(images_dir, image["file_name"], f"{instances_path}: image {ref['image_id']!r}")
                )
                self.expressions.append([])
            x, y, w, h = annotation["bbox"]
            width, height = image["width"], image["height"]
            box = (max(x / width, 0.0), max(y / height, 0.0), min((x + w) / width, 1.0), min((y + h) / height, 1.0))
            if box[0] >= box[2] or box[1] >= box[3]:
                raise DataError(
                    f"{where}: the bbox {annotation['bbox']} of annotation {ref['ann_id']!r} lies outside its "
                    f"{width}x{height} image {image['file_name']}"
                )
            for sentence in ref["sentences"]:
                text = sentence.get("sent", sentence.get("raw")).strip()
                if text:
                    self.expressions[order[ref["image_id"]]].append(Referring(text, box, int(ref["ann_id"])))
        self.split_name = wanted
        super().__init__(
            images=paths,
            captions=[[r.text for r in found] for found in self.expressions],
            source=f"{refs_path} (split {wanted!r})",
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **config_options(config),
        )

    def _raw_referring(self, index: int) -> list[Referring]:
        return list(self.expressions[self.image_of(index)])


def build_refcoco(config: RefCocoConfig, context: Any) -> RefCoco:
    return RefCoco(config, **split_options(context))
