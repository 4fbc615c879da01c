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

#: What one item of a :class:`CodeDataset` is: an image, one of its questions, one of its referring expressions.
UNITS = ("image", "question", "referring")


class CodeDataset(Dataset):
    """``dataset[key]`` -> ``{"codes": LongTensor h w (or k h w), "caption", "captions", "index"}``.

    With ``annotations = ("segmentation",)`` an item also holds the image's label map (``H W``), flipped
    with the codes when the flipped view is drawn. With ``unit = "question"`` there is one item per
    question of each image (``question``, ``answer``, ``question_type``); with ``unit = "referring"``
    one per referring expression (``expression``, ``boxes``: x0 y0 x1 y1 as fractions of the side, and
    ``text``: what the text encoder reads). Annotations are those of the unaugmented view the codes
    were encoded from, mirrored with the codes. With ``condition_codes`` (the cached codes of a
    ``[condition_tokenizer]``, e.g. of the image's label map) an item also holds ``condition_codes``
    (``h' w'``), the flipped ones when its image codes are flipped; an item either cache could not
    read is unreadable.
    """

    def __init__(
        self,
        codes: dict[str, torch.Tensor],
        images: Any,
        annotations: Sequence[str] = (),
        unit: str = "image",
        condition_codes: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        self.unit = unit
        self.annotations = tuple(annotations)
        if self.annotations:
            images.require_annotations(*self.annotations)
        self.indices = codes["indices"]
        self.flipped = codes.get("indices_flipped")
        self.valid = codes["valid"]
        self.condition_indices = self.condition_flipped = None
        if condition_codes is not None:
            if len(condition_codes["indices"]) != len(self.indices):
                raise ValueError(
                    f"the cached condition codes hold {len(condition_codes['indices'])} items but the image codes "
                    f"{len(self.indices)}; delete the code cache files or check [data]"
                )
            self.condition_indices = condition_codes["indices"]
            self.condition_flipped = condition_codes.get("indices_flipped")
            self.valid = self.valid & condition_codes["valid"]
        self.images = images  # the image dataset the codes came from: captions, annotations
        self.split = getattr(images, "split", "train")
        if len(self.indices) != len(images):
            raise ValueError(
                f"the cached codes hold {len(self.indices)} items but the dataset has {len(images)}; "
                "delete the code cache file or check [data]"
            )
        # (image, annotation) pairs of a question or referring unit, in image order
        self.pairs: list[tuple[int, int]] | None = None
        if unit != "image":
            read = images.questions if unit == "question" else images.referring
            self.pairs = [
                (image, j) for image in range(len(images)) if bool(self.valid[image]) for j in range(len(read(image)))
            ]

    def __len__(self) -> int:
        return len(self.indices) if self.pairs is None else len(self.pairs)

    @property
    def image_size(self) -> int | None:
        return getattr(self.images, "image_size", None)

    def all_captions(self):
        return self.images.all_captions()

    def __getitem__(self, key: Key) -> dict[str, Any]:
        position, seed = parse_key(key, len(self))
        index, annotation = (position, None) if self.pairs is None else self.pairs[position]
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
        item = {"codes": codes.long(), "caption": caption, "captions": captions, "index": position, "image": index}
        if self.condition_indices is not None:
            condition = self.condition_flipped if flipped else self.condition_indices
            item["condition_codes"] = condition[index].long()
        if "segmentation" in self.annotations:
            labels = self.images.segmentation(index)  # the unaugmented view the codes were encoded from
            item["segmentation"] = labels.flip(-1) if flipped else labels
        if self.unit == "question":
            question = self.images.questions(index)[annotation]
            question = question.mirrored() if flipped else question
            item.update(question=question.text, answer=question.answer, question_type=question.type)
        elif self.unit == "referring":
            referring = self.images.referring(index)[annotation]
            referring = referring.mirrored() if flipped else referring
            item.update(expression=referring.text, text=referring.text, boxes=torch.tensor(referring.box))
        return item

    def partner_codes(self, images: Sequence[int], seed: int) -> torch.Tensor:
        """Codes (b h w) of another image of the split for each of ``images``: the shuffled-image control.

        The partner of image i is σ(i) for one random cycle σ through the split's readable images,
        drawn from ``seed``: no image is its own partner (with two or more), and every question or
        expression of an image gets the same partner, whatever the batches.
        """
        cached = getattr(self, "_partners", None)
        if cached is None or cached[0] != seed:
            readable = torch.nonzero(self.valid, as_tuple=False).flatten()
            order = readable[torch.randperm(len(readable), generator=torch.Generator().manual_seed(seed))]
            partner = torch.arange(len(self.indices))
            partner[order] = order.roll(-1)
            self._partners = cached = (seed, partner)
        return self.indices[cached[1][torch.as_tensor(list(images), dtype=torch.long)]].long()

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack codes; list captions and indices; report unreadable items under ``skipped``."""
        good = [item for item in items if "error" not in item]
        batch = {
            "codes": torch.stack([item["codes"] for item in good]) if good else None,
            "caption": [item["caption"] for item in good],
            "captions": [item["captions"] for item in good],
            "index": [item["index"] for item in good],
            "image_index": [item["image"] for item in good],
            "skipped": [(item["index"], item["error"]) for item in items if "error" in item],
        }
        for key in ("segmentation", "boxes", "condition_codes"):
            if good and key in good[0]:
                batch[key] = torch.stack([item[key] for item in good])
        for key in ("question", "answer", "question_type", "expression", "text"):
            if good and key in good[0]:
                batch[key] = [item[key] for item in good]
        return batch
