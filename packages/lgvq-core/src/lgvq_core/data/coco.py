"""``coco-captions``: MS-COCO captions in the 2014 layout.

``annotations/captions_train2014.json`` holds ``images`` (``id``, ``file_name``) and
``annotations`` (``image_id``, ``caption``). Images are found by the JSON's ``file_name`` (which
must stay inside the images folder: absolute or climbing paths are refused), never
by a name built from the id (the official loader's bug dropped every image whose id has fewer
than 6 digits, silently); a missing image fails, or is skipped and reported, as its item.

By default an item is an image and its caption is sampled from the image's ~5 captions; with
``per_caption`` every caption is an item, as in the official loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lgvq_core.data.base import config_options, normalize_captions, split_options
from lgvq_core.data.config import CocoCaptionsConfig
from lgvq_core.data.files import read_json, require_dir, resolve
from lgvq_core.data.inside_root import ListedPaths
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError


def read_coco_captions(path: Path, key: str, positions: list[int] | None = None) -> list[tuple[str, list[str]]]:
    """``(file_name, captions)`` per image of the file, in its image order (captions may be empty).

    ``positions`` (when given) receives each image's index in the file's ``images`` list, for messages.
    """
    data = read_json(path, key)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise DataError(f"{path} is not a COCO captions file: expected 'images' and 'annotations' lists")
    names: dict[Any, tuple[str, int]] = {}
    for number, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataError(f"{path}: images[{number}] needs an 'id' and a 'file_name'")
        names[image["id"]] = (image["file_name"], number)
    captions: dict[Any, list[str]] = {image_id: [] for image_id in names}
    for number, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or not isinstance(annotation.get("caption"), str):
            raise DataError(f"{path}: annotations[{number}] needs an 'image_id' and a 'caption'")
        image_id = annotation.get("image_id")
        if image_id not in captions:
            raise DataError(f"{path}: annotations[{number}] refers to image id {image_id!r}, which 'images' lacks")
        captions[image_id].append(annotation["caption"])
    if positions is not None:
        positions.extend(names[image_id][1] for image_id in captions)
    return [(names[image_id][0], found) for image_id, found in captions.items()]


class CocoCaptions(ListedImages):
    name = "coco-captions"

    def __init__(self, config: CocoCaptionsConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        prefix = "train" if split == "train" else "val"
        key = f"{prefix}_annotations"
        path = resolve(root, getattr(config, key))
        positions: list[int] = []
        listed = read_coco_captions(path, key, positions)
        folder = require_dir(resolve(root, getattr(config, f"{prefix}_images")), f"{prefix}_images")
        # normalised up front, so that with per_caption an item's caption number stays valid
        paths = ListedPaths(folder, skip_bad_items)
        groups = [
            (
                paths.join(file_name, f"{path}: images[{number}].file_name"),
                normalize_captions(captions, config.lowercase),
            )
            for (file_name, captions), number in zip(listed, positions, strict=True)
        ]
        captioned = [(image, group) for image, group in groups if group]
        item_images = None
        self.item_captions: list[int] | None = None
        if config.per_caption:
            item_images = [image for image, (_, group) in enumerate(captioned) for _ in group]
            self.item_captions = [number for _, group in captioned for number in range(len(group))]
        super().__init__(
            images=[image for image, _ in captioned],
            refused=paths.refused,
            captions=[group for _, group in captioned],
            source=str(path),
            item_images=item_images,
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **config_options(config),
        )
        if len(captioned) < len(listed):
            self.log(
                f"{self.name} ({split}): {len(listed) - len(captioned)} of {len(listed)} images in {path} have no "
                "caption and are left out"
            )

    def sample_caption(self, index: int, captions: list[str], generator: torch.Generator | None) -> str:
        """With ``per_caption`` the item's own caption (official: no length rule); else the caption rule."""
        if self.item_captions is not None:
            return captions[self.item_captions[index]]
        return super().sample_caption(index, captions, generator)


def build_coco_captions(config: CocoCaptionsConfig, context: Any) -> CocoCaptions:
    return CocoCaptions(config, **split_options(context))
