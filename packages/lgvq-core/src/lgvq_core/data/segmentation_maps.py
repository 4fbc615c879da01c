"""``segmentation-maps``: another dataset's label maps as one-hot images, to train a mask autoencoder.

Semantic image synthesis with ``semantic_source = "vq"`` (the paper's Table 6, taming's protocol)
conditions a prior on the codes of a small VQ autoencoder trained on segmentation masks. That
autoencoder is an ordinary tokenizer run: any backbone, trained on this dataset, whose items are
``C x H x W`` one-hot label maps in {-1, +1} (see :class:`~lgvq_core.data.config.SegmentationMapsConfig`).
The dataset reports ``in_channels = C`` so the backbone is built with ``C`` input and output
channels, and offers :meth:`SegmentationMaps.render` so sample grids show the maps in colour.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lgvq_core.data.annotations import SEGMENTATION
from lgvq_core.data.base import CaptionedImages, Key, item_generator, parse_key
from lgvq_core.errors import DataError
from lgvq_core.registry import get_registry


def one_hot_maps(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Label maps ``... H W`` (long) as one-hot ``... C H W`` in {-1, +1}."""
    one_hot = F.one_hot(labels.long(), classes).movedim(-1, -3)  # ... C H W
    return one_hot.float().mul(2).sub(1)


def labels_of(maps: torch.Tensor) -> torch.Tensor:
    """The class of each pixel of one-hot (or reconstructed) maps ``... C H W``: their argmax, ``... H W``."""
    return maps.argmax(dim=-3)


class SegmentationMaps(CaptionedImages):
    """``dataset[key]["image"]`` is the one-hot label map of ``source[key]`` (same crop and flip)."""

    name = "segmentation-maps"

    def __init__(self, source: CaptionedImages, classes: int | None = None) -> None:
        source.require_annotations(SEGMENTATION)
        super().__init__(
            split=source.split,
            image_size=source.image_size,
            train_transform=source.train_transform,
            val_transform=source.val_transform,
            max_caption_words=source.max_caption_words,
            lowercase=source.lowercase,
            skip_bad_items=source.skip_bad_items,
            log=source.log,
        )
        self.source = source
        self.classes = classes if classes is not None else len(source.segmentation_classes())

    @property
    def in_channels(self) -> int:
        """Channels of an item's image: one per class."""
        return self.classes

    def __len__(self) -> int:
        return len(self.source)

    def captions_of(self, index: int) -> list[str]:
        return self.source.captions_of(index)

    def all_captions(self):
        return self.source.all_captions()

    def _caption_groups(self):
        return self.source._caption_groups()

    def _caption_source(self, index: int) -> str:
        return self.source._caption_source(index)

    def one_hot(self, key: Key) -> torch.Tensor:
        """The one-hot map ``C H W`` of item ``key``; a label outside ``[0, C)`` is an error naming the item."""
        labels = self.source.segmentation(key)  # H W, the crop and flip of source[key]
        index, _ = parse_key(key, len(self))
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.classes):
            raise DataError(
                f"item {index} of {self.source.name} ({self.split}) has labels in [{int(labels.min())}, "
                f"{int(labels.max())}] but data.classes is {self.classes}; raise data.classes or leave it unset"
            )
        return one_hot_maps(labels, self.classes)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, seed = parse_key(key, len(self))
        try:
            captions = self.captions_of(index)
            caption = self.source.sample_caption(index, captions, item_generator(seed))
            image = self.one_hot(key)
        except DataError as error:
            if not self.skip_bad_items:
                raise
            return {"index": index, "error": str(error)}
        return {"image": image, "caption": caption, "captions": captions, "index": index}

    def render(self, maps: torch.Tensor) -> torch.Tensor:
        """One-hot (or reconstructed) maps ``b C H W`` as colour images ``b 3 H W`` in [-1, 1] (argmax, a fixed palette)."""
        palette = torch.Generator().manual_seed(0)
        colours = torch.rand(self.classes, 3, generator=palette).mul(2).sub(1)
        colours[0] = -1.0  # the background is black
        return colours.to(maps.device)[labels_of(maps)].movedim(-1, -3)  # b H W 3 -> b 3 H W


def build_segmentation_maps(config, context) -> SegmentationMaps:
    """The source dataset of the same split, wrapped."""
    source = get_registry().build("dataset", config.source, "$.data.source", context)
    return SegmentationMaps(source, config.classes)
