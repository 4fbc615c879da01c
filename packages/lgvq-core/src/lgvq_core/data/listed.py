"""Datasets whose images are listed up front: a path per image, with captions in memory or in files.

Every real format reads its index files (JSON, JSONL, split lists) into a :class:`ListedImages`;
the images and caption files themselves are read per item, so a bad one fails (or is skipped) as
that item, naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from lgvq_core.data.base import CaptionedImages
from lgvq_core.data.files import SKIP_HINT, open_image_file, read_caption_file
from lgvq_core.errors import DataError


def image_dimensions(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header (nothing is decoded)."""
    if not path.is_file():
        raise DataError(f"image file not found: {path}; {SKIP_HINT}")
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image file {path}: {exc}; {SKIP_HINT}") from None


class ListedImages(CaptionedImages):
    """Items are images; ``captions[i]`` (in memory) or ``caption_files[i]`` (read per item) hold
    the captions of image ``i``.

    :param source: what lists the images (a file or folder), for messages.
    :param item_images: optional map item -> image, when several items share an image.
    :param refused: listed paths refused as outside the data folder (placeholder -> message, from
        :class:`~lgvq_core.data.inside_root.ListedPaths`); loading such an item raises that message.
    """

    def __init__(
        self,
        *,
        images: Sequence[Path],
        captions: Sequence[list[str]] | None = None,
        caption_files: Sequence[Path] | None = None,
        source: str,
        item_images: Sequence[int] | None = None,
        refused: dict[Path, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if (captions is None) == (caption_files is None):
            raise ValueError("give exactly one of captions and caption_files")
        self.images = list(images)
        self.captions = None if captions is None else list(captions)
        self.caption_files = None if caption_files is None else list(caption_files)
        self.source = source
        self.item_images = None if item_images is None else list(item_images)
        self.refused = dict(refused or {})
        if len(self.captions if self.captions is not None else self.caption_files) != len(self.images):
            raise ValueError("images and their captions must have the same length")
        if len(self) == 0:
            raise DataError(f"{source} lists no captioned images for the {self.split} split")

    def __len__(self) -> int:
        return len(self.images) if self.item_images is None else len(self.item_images)

    def image_of(self, index: int) -> int:
        """The image of item ``index``."""
        return index if self.item_images is None else self.item_images[index]

    def image_path(self, index: int) -> Path:
        return self.images[self.image_of(index)]

    def _raw_captions(self, index: int) -> list[str]:
        image = self.image_of(index)
        if self.captions is not None:
            return self.captions[image]
        self._refuse(self.images[image])
        self._refuse(self.caption_files[image])
        return read_caption_file(self.caption_files[image])

    def _load_image(self, index: int) -> Image.Image:
        self._refuse(self.image_path(index))
        return open_image_file(self.image_path(index))

    def _image_dimensions(self, index: int) -> tuple[int, int]:
        self._refuse(self.image_path(index))
        return image_dimensions(self.image_path(index))

    def _refuse(self, path: Path) -> None:
        if path in self.refused:
            raise DataError(self.refused[path])

    def _caption_source(self, index: int) -> str:
        image = self.image_of(index)
        if self.caption_files is not None:
            return f"caption file {self.caption_files[image]}"
        return f"image {self.images[image]} in {self.source}"

    def _caption_groups(self) -> Iterator[int]:
        if self.item_images is None:
            return iter(range(len(self)))
        first: dict[int, int] = {}
        for item, image in enumerate(self.item_images):
            first.setdefault(image, item)
        return iter(first.values())
