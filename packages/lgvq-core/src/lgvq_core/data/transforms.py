"""Image transforms: any PIL image -> a square ``size`` x ``size`` tensor in [-1, 1].

Random steps (crop offset, flip) draw from the item's ``torch.Generator`` in a fixed order (crop
top, crop left, flip), so an item's augmentation is a pure function of its seed. Without a
generator the random steps take their deterministic value (centre crop, no flip).

Sizes and crop offsets follow torchvision's ``Resize(int)``, ``CenterCrop`` and ``RandomCrop``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lgvq_core.data.config import TRANSFORMS


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (the longer side is truncated, as torchvision does)."""
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return image.resize(new_size, Image.BILINEAR)


def crop_offsets(width: int, height: int, size: int, generator: torch.Generator | None) -> tuple[int, int]:
    """Top-left corner ``(left, top)`` of a ``size`` square: random with a generator, else centred."""
    if generator is None:
        return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return left, top


def coin_flip(generator: torch.Generator | None) -> bool:
    """A fair coin from the generator; ``False`` without one."""
    return generator is not None and bool(torch.rand((), generator=generator) < 0.5)


def apply_transform(image: Image.Image, name: str, size: int, generator: torch.Generator | None = None) -> Image.Image:
    """Apply the transform ``name`` (one of :data:`lgvq_core.data.config.TRANSFORMS`)."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of: {', '.join(TRANSFORMS)}")
    if name.startswith("resize-square"):
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
    else:
        image = resize_shorter_side(image, size)
        width, height = image.size
        random_crop = name.startswith("resize-random-crop")
        left, top = crop_offsets(width, height, size, generator if random_crop else None)
        if (width, height) != (size, size):
            image = image.crop((left, top, left + size, top + size))
    if name.endswith("-flip") and coin_flip(generator):
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor ``3 h w`` with values x / 127.5 - 1."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # h w 3
    return pixels.permute(2, 0, 1).float().div_(127.5).sub_(1.0)
