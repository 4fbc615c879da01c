"""``image-text-folder``: images under a root folder, listed with their captions in JSONL files.

This is the format to convert any image-caption data set to. One JSON object per line::

    {"image": "photos/0001.jpg", "captions": ["a red bus on a street", "a bus parked by a kerb"]}
    {"image": "photos/0002.png", "caption": "two dogs on a beach"}

- ``image``: path of the image, relative to ``root`` (any format PIL reads; any size); a path that
  is absolute or climbs out of ``root`` is refused (symlinks inside ``root`` are followed);
- ``captions``: the image's captions (a list of strings), or ``caption``: a single one;
- lines naming the same image are merged; blank lines are ignored; other keys are ignored.

The splits come from two files (``train_file``, ``val_file``) or from one (``train_file``) with
``val_fraction``: an image belongs to the val split when a hash of ``split_seed`` and its path
falls below ``val_fraction``. The choice depends on nothing else, so it is the same on every
machine and an image keeps its split when others are added to the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lgvq_core.data.base import config_options, split_options
from lgvq_core.data.config import ImageTextFolderConfig
from lgvq_core.data.files import require_dir, require_file, resolve
from lgvq_core.data.inside_root import ListedPaths
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError

_LINE_FORMAT = '{"image": "relative/path.jpg", "captions": ["...", ...]}'


def read_caption_lines(path: Path, key: str, lines_of: dict[str, int] | None = None) -> dict[str, list[str]]:
    """Image path -> captions, in file order, from a JSONL captions file.

    ``lines_of`` (when given) receives the first line number of each image, for messages.
    """
    require_file(path, key)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    entries: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); each line is {_LINE_FORMAT}") from None
        image, captions = _parse_record(record, f"{path}:{number}")
        entries.setdefault(image, []).extend(captions)
        if lines_of is not None:
            lines_of.setdefault(image, number)
    return entries


def _parse_record(record: Any, where: str) -> tuple[str, list[str]]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object {_LINE_FORMAT}, got {type(record).__name__}")
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise DataError(f'{where}: "image" must be a non-empty path relative to the root')
    if "captions" in record:
        captions = record["captions"]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DataError(f'{where}: "captions" must be a list of strings')
        return image, captions
    if isinstance(record.get("caption"), str):
        return image, [record["caption"]]
    raise DataError(f'{where}: give "captions" (a list of strings) or "caption" (a string)')


def in_val_split(image: str, split_seed: int, val_fraction: float) -> bool:
    """Whether ``image`` is held out: a hash of (seed, path) mapped to [0, 1) below the fraction."""
    digest = hashlib.sha256(f"{split_seed}:{image}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


class ImageTextFolder(ListedImages):
    name = "image-text-folder"

    def __init__(self, config: ImageTextFolderConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        if config.val_fraction is None and config.val_file is None:
            raise DataError("image-text-folder needs data.val_file or data.val_fraction")
        if split == "val" and config.val_file is not None:
            key, path = "val_file", resolve(root, config.val_file)
        else:
            key, path = "train_file", resolve(root, config.train_file)
        lines_of: dict[str, int] = {}
        entries = read_caption_lines(path, key, lines_of)
        if config.val_fraction is not None:
            held_out = split == "val"
            entries = {
                image: captions
                for image, captions in entries.items()
                if in_val_split(image, config.split_seed, config.val_fraction) == held_out
            }
            if not entries:
                raise DataError(
                    f"val_fraction = {config.val_fraction} leaves the {split} split of {path} empty; "
                    "change data.val_fraction or give data.val_file"
                )
        listed = ListedPaths(root, skip_bad_items)
        super().__init__(
            images=[listed.join(image, f"{path}:{lines_of[image]}") for image in entries],
            refused=listed.refused,
            captions=list(entries.values()),
            source=str(path),
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **config_options(config),
        )


def build_image_text_folder(config: ImageTextFolderConfig, context: Any) -> ImageTextFolder:
    return ImageTextFolder(config, **split_options(context))
