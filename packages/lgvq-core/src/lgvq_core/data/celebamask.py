"""``celebamask-hq``: CelebAMask-HQ faces with their part masks merged to the 19 standard classes.

Layout under ``root`` (CelebAMask-HQ's own, plus MM-CelebA-HQ's captions and split lists)::

    CelebA-HQ-img/<id>.jpg                                 the 30 000 faces (1024 x 1024)
    CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png  one binary mask per visible part (512 x 512)
    celeba-caption/<id>.txt                                MM-CelebA-HQ's ten captions (optional)
    CelebAMask-HQ-attribute-anno.txt                       40 attributes per image (captions otherwise)
    train/filenames.pickle, test/filenames.pickle          MM-CelebA-HQ's split (or .txt, one id a line)

The masks of an image are merged as CelebAMask-HQ's own preprocessing (``g_mask.py``) does: the
parts in :data:`PARTS` order, each painting its class over the earlier ones; pixels no part covers
are background (0). A part with no file is absent (CelebAMask-HQ leaves out occluded parts). The
label map is scaled to the image (nearest) and then follows the image's transform.

Without ``celeba-caption/``, an image's caption lists its positive attributes ("a face: arched
eyebrows, brown hair, smiling"), so that every item has text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lgvq_core.data.base import config_options, split_options
from lgvq_core.data.config import CelebAMaskHQConfig
from lgvq_core.data.files import SKIP_HINT, load_name_list, read_lines, require_dir, resolve
from lgvq_core.data.inside_root import join_inside
from lgvq_core.data.listed import ListedImages
from lgvq_core.errors import DataError

#: CelebAMask-HQ's 18 parts, in the order of its preprocessing (class = position + 1).
PARTS: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
#: The 19 classes: background, then the parts.
CLASSES: tuple[str, ...] = ("background", *PARTS)
#: Images per mask sub-folder.
FOLDER_SPAN = 2000


def read_attribute_captions(path: Path) -> dict[str, list[str]]:
    """``{image id: [caption]}`` from CelebAMask-HQ's attribute file (count, names, then a row per image)."""
    lines = read_lines(path, "attributes_file")
    if len(lines) < 2:
        raise DataError(f"{path} is not a CelebAMask-HQ attribute file: expected a count line and a names line")
    names = [name.replace("_", " ").lower() for name in lines[1].split()]
    captions = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != len(names) + 1 or any(value not in ("1", "-1") for value in fields[1:]):
            raise DataError(f"{path}: line {number} is not '<image>.jpg' followed by {len(names)} values 1 or -1")
        positive = [name for name, value in zip(names, fields[1:], strict=True) if value == "1"]
        captions[Path(fields[0]).stem] = ["a face: " + ", ".join(positive) if positive else "a face"]
    return captions


class CelebAMaskHQ(ListedImages):
    name = "celebamask-hq"
    ANNOTATION_KINDS = frozenset({"segmentation"})

    def __init__(self, config: CelebAMaskHQConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        images_dir = require_dir(resolve(root, config.images_dir), "images_dir")
        self.masks_dir = require_dir(resolve(root, config.masks_dir), "masks_dir")
        key = "train_list" if split == "train" else "val_list"
        list_path = resolve(root, getattr(config, key))
        ids = load_name_list(list_path, key)
        source = str(list_path if list_path.is_file() else list_path.with_suffix(".txt"))
        self.ids: list[int] = []
        for position, image_id in enumerate(ids):
            if not image_id.isdigit():
                raise DataError(f"{source}: entry {position} is {image_id!r}, expected a CelebA-HQ image number")
            self.ids.append(int(image_id))
        images = [
            join_inside(images_dir, f"{image_id}{config.image_ext}", f"{source} entry {k}")
            for k, image_id in enumerate(ids)
        ]
        captions_dir = resolve(root, config.captions_dir)
        texts: dict[str, Any] = {}
        if captions_dir.is_dir():
            texts["caption_files"] = [captions_dir / f"{image_id}.txt" for image_id in ids]
        else:
            attributes_path = resolve(root, config.attributes_file)
            if not attributes_path.is_file():
                raise DataError(
                    f"no captions for celebamask-hq: neither {captions_dir} (MM-CelebA-HQ's captions) nor {attributes_path} "
                    "(CelebAMask-HQ's attributes) exists; set data.captions_dir or data.attributes_file"
                )
            table = read_attribute_captions(attributes_path)
            texts["captions"] = [table.get(image_id, []) for image_id in ids]
        super().__init__(
            images=images,
            source=source,
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **texts,
            **config_options(config),
        )

    def mask_files(self, index: int) -> list[tuple[int, Path]]:
        """``(class, file)`` of every part mask that exists for image ``index``, in painting order."""
        image_id = self.ids[self.image_of(index)]
        folder = self.masks_dir / str(image_id // FOLDER_SPAN)
        found = [(label, folder / f"{image_id:05d}_{part}.png") for label, part in enumerate(PARTS, start=1)]
        return [(label, path) for label, path in found if path.is_file()]

    def _segmentation_classes(self) -> tuple[str, ...]:
        return CLASSES

    def _raw_segmentation(self, index: int) -> Image.Image:
        image_id = self.ids[self.image_of(index)]
        files = self.mask_files(index)
        if not files:
            folder = self.masks_dir / str(image_id // FOLDER_SPAN)
            raise DataError(
                f"no part masks of image {image_id} in {folder} (expected {image_id:05d}_<part>.png); {SKIP_HINT}"
            )
        labels: np.ndarray | None = None
        for label, path in files:
            try:
                with Image.open(path) as mask:
                    covered = np.asarray(mask.convert("L")) != 0  # h w
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataError(f"cannot read mask file {path}: {exc}; {SKIP_HINT}") from None
            if labels is None:
                labels = np.zeros(covered.shape, dtype=np.uint8)
            elif covered.shape != labels.shape:
                raise DataError(
                    f"mask file {path} is {covered.shape[1]}x{covered.shape[0]}, the other masks of image {image_id} are {labels.shape[1]}x{labels.shape[0]}; {SKIP_HINT}"
                )
            labels[covered] = label
        return Image.fromarray(labels, "L")


def build_celebamask_hq(config: CelebAMaskHQConfig, context: Any) -> CelebAMaskHQ:
    return CelebAMaskHQ(config, **split_options(context))
