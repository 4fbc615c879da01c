"""A dataset of cached code indices, with the captions of the images they came from.

Items are addressed like every dataset's (``index`` or ``(index, seed)``, see
:mod:`lgvq_core.data.base`): with a seed, the caption and (when flipped codes exist) the flip are
drawn from the item's own generator, so data order and choices are a function of the keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from lgvq_core.data.base import Key, item_generator, parse_key


class CodeDataset(Dataset):
    """``dataset[key]`` -> ``{"codes": LongTensor h w (or k h w), "caption", "captions", "index"}``.

    With ``annotations = ("segmentation",)`` an item also holds the image's label map (``H W``), flipped
    with the codes when the flipped view is drawn.
    """

    def __init__(self, codes: dict[str, torch.Tensor], images: Any, annotations: Sequence[str] = ()) -> None:
        self.annotations = tuple(annotations)
        if self.annotations:
            images.require_annotations(*self.annotations)
        self.indices = codes["indices"]
        self.flipped = codes.get("indices_flipped")
        self.valid = codes["valid"]
        self.images = images  # the image dataset the codes came from: captions, annotations
        self.split = getattr(images, "split", "train")
        if len(self.indices) != len(images):
            raise ValueError(
                f"the cached codes hold {len(self.indices)} items but the dataset has {len(images)}; "
                "delete the code cache file or check [data]"
            )

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def image_size(self) -> int | None:
        return getattr(self.images, "image_size", None)

    def all_captions(self):
        return self.images.all_captions()

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, seed = parse_key(key, len(self))
        if not bool(self.valid[index]):
            return {"index": index, "error": f"item {index} of the {self.split} split could not be read when encoded"}
        generator = item_generator(seed)
        captions = self.images.captions_of(index)
        caption = self.images.sample_caption(index, captions, generator)
        codes = self.indices[index]
        flipped = False
        if self.flipped is not None and generator is not None and self.split == "train":
            flipped = bool(torch.rand((), generator=generator) < 0.5)
            if flipped:
                codes = self.flipped[index]
        item = {"codes": codes.long(), "caption": caption, "captions": captions, "index": index}
        if "segmentation" in self.annotations:
            labels = self.images.segmentation(index)  # the unaugmented view the codes were encoded from
            item["segmentation"] = labels.flip(-1) if flipped else labels
        return item

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack codes; list captions and indices; report unreadable items under ``skipped``."""
        good = [item for item in items if "error" not in item]
        batch = {
            "codes": torch.stack([item["codes"] for item in good]) if good else None,
            "caption": [item["caption"] for item in good],
            "captions": [item["captions"] for item in good],
            "index": [item["index"] for item in good],
            "skipped": [(item["index"], item["error"]) for item in items if "error" in item],
        }
        if good and "segmentation" in good[0]:
            batch["segmentation"] = torch.stack([item["segmentation"] for item in good])
        return batch
