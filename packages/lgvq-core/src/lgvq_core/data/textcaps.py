"""``textcaps``: TextCaps 0.1 (Open Images photos with text in them, ~5 captions each).

``TextCaps_0.1_<split>.json`` holds ``{"data": [entry, ...]}``, one entry per caption::

    {"image_id": "011e7e629fb9ae7b", "image_name": "011e7e629fb9ae7b",
     "image_path": "train/011e7e629fb9ae7b.jpg", "caption_str": "...", "reference_strs": ["...", ...]}

Entries are grouped by ``image_id`` into one item per image. An image's captions are its entries'
``caption_str``; an entry without one (as in the test file) contributes its ``reference_strs``.
The image file is ``<images folder>/<file name of image_path>`` (else ``image_name`` or
``image_id`` + ``.jpg``): TextVQA ships the train and val images together in ``train_images/``.
Images without any caption are left out and counted in the log.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from lgvq_core.data.base import config_options, split_options
from lgvq_core.data.config import TextCapsConfig
from lgvq_core.data.files import read_json, require_dir, resolve
from lgvq_core.data.inside_root import ListedPaths
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError


def _file_name(entry: dict[str, Any]) -> str:
    if isinstance(entry.get("image_path"), str):
        return PurePosixPath(entry["image_path"]).name
    name = entry.get("image_name", entry["image_id"])
    return f"{name}.jpg"


def read_textcaps(path: Path, key: str) -> list[tuple[str, list[str]]]:
    """``(file name, captions)`` per image, in order of first appearance (captions may be empty)."""
    data = read_json(path, key)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path} is not a TextCaps file: expected a 'data' list")
    images: dict[str, tuple[str, list[str]]] = {}
    for number, entry in enumerate(data["data"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("image_id"), str):
            raise DataError(f"{path}: data[{number}] needs an 'image_id' string")
        file_name, captions = images.setdefault(entry["image_id"], (_file_name(entry), []))
        if isinstance(entry.get("caption_str"), str):
            captions.append(entry["caption_str"])
        elif isinstance(entry.get("reference_strs"), list):
            captions.extend(c for c in entry["reference_strs"] if isinstance(c, str) and c not in captions)
    return list(images.values())


class TextCaps(ListedImages):
    name = "textcaps"

    def __init__(self, config: TextCapsConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        prefix = "train" if split == "train" else "val"
        key = f"{prefix}_annotations"
        path = resolve(root, getattr(config, key))
        listed = read_textcaps(path, key)
        folder = require_dir(resolve(root, getattr(config, f"{prefix}_images")), f"{prefix}_images")
        captioned = [(file_name, captions) for file_name, captions in listed if captions]
        paths = ListedPaths(folder, skip_bad_items)
        super().__init__(
            images=[paths.join(file_name, f"{path}: a 'data' entry") for file_name, _ in captioned],
            refused=paths.refused,
            captions=[captions for _, captions in captioned],
            source=str(path),
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


def build_textcaps(config: TextCapsConfig, context: Any) -> TextCaps:
    return TextCaps(config, **split_options(context))
