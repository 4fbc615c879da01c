"""``cub-200-text``: CUB-200-2011 birds with the captions of Reed et al. (2016).

Layout under ``root`` (the ``CUB_200_2011`` folder)::

    images.txt                  "<image id> <class>/<file>.jpg" per line (relative to images/;
                                absolute or climbing paths are refused)
    train_test_split.txt        "<image id> <1 = train | 0 = test>" per line (the image-level split)
    images/<class>/<file>.jpg
    birds/text/<class>/<file>.txt   ten captions, one per line ("text_c10/..." in Reed et al.'s
                                    cvpr2016_cub release: set text_dir)

The val split is the official test half (``0``), as in the official loader.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from lgvq_core.data.base import config_options, split_options
from lgvq_core.data.config import CubTextConfig
from lgvq_core.data.files import require_dir, require_file, resolve
from lgvq_core.data.inside_root import ListedPaths
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError


def read_id_table(path: Path, what: str, lines_of: dict[str, int] | None = None) -> dict[str, str]:
    """``"<id> <value>"`` lines -> ``{id: value}`` (``lines_of`` receives each id's line number).

    Line numbers count every line of the file, blank ones included, as an editor shows them.
    """
    require_file(path, "root")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    table: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path}: line {number} is not '<image id> <{what}>': {line!r}")
        table[parts[0]] = parts[1]
        if lines_of is not None:
            lines_of[parts[0]] = number
    return table


class CubText(ListedImages):
    name = "cub-200-text"

    def __init__(self, config: CubTextConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        images_dir = require_dir(resolve(root, config.images_dir), "images_dir")
        text_dir = require_dir(resolve(root, config.text_dir), "text_dir")
        split_path = root / "train_test_split.txt"
        index = root / "images.txt"
        lines_of: dict[str, int] = {}
        paths = read_id_table(index, "class/file.jpg", lines_of)
        flags = read_id_table(split_path, "1 or 0")
        wanted = "1" if split == "train" else "0"
        chosen = []
        for image_id, relative in paths.items():
            flag = flags.get(image_id)
            if flag not in ("0", "1"):
                found = "no line" if flag is None else f"{flag!r}"
                raise DataError(f"{split_path}: image id {image_id} has {found}; expected 1 (train) or 0 (test)")
            if flag == wanted:
                chosen.append((relative, f"{index}:{lines_of[image_id]}"))
        images = ListedPaths(images_dir, skip_bad_items)
        texts = ListedPaths(text_dir, skip_bad_items)
        super().__init__(
            images=[images.join(relative, where) for relative, where in chosen],
            caption_files=[
                texts.join(str(PurePosixPath(relative).with_suffix(".txt")), where, "caption file path")
                for relative, where in chosen
            ],
            refused={**images.refused, **texts.refused},
            source=str(root / "images.txt"),
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **config_options(config),
        )


def build_cub(config: CubTextConfig, context: Any) -> CubText:
    return CubText(config, **split_options(context))
