"""Image transforms: any PIL image -> a square ``size`` x ``size`` tensor in [-1, 1].

Random steps (crop offset, flip) draw from the item's ``torch.Generator`` in a fixed order (crop
top, crop left, flip), so an item's augmentation is a pure function of its seed. Without a
generator the random steps take their deterministic value (centre crop, no flip).

Sizes and crop offsets follow torchvision's ``Resize(int)``, ``CenterCrop`` and ``RandomCrop``.

A transform is planned first (:func:`plan_transform`: the resized size, crop corner and flip, drawn
from the generator) and then applied (:func:`apply_placement`), so that a segmentation map
(nearest-neighbour) and boxes (:func:`place_box`) follow exactly the image's resize, crop and flip.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from PIL import Image

from lgvq_core.data.config import TRANSFORMS


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


@attrs.frozen
class Placement:
    """How a ``source`` sized image becomes the ``size`` square: resize, crop, flip."""

    #: ``(width, height)`` of the image before the transform.
    source: tuple[int, int]
    #: ``(width, height)`` after resizing.
    resized: tuple[int, int]
    #: Top-left corner ``(left, top)`` of the ``size`` square cut from the resized image.
    corner: tuple[int, int]
    flip: bool
    size: int


def resized_size(width: int, height: int, name: str, size: int) -> tuple[int, int]:
    """The size transform ``name`` scales a ``width`` x ``height`` image to before cropping.

    "resize-square": ``size`` x ``size``; the others scale the shorter side to ``size`` (the longer
    side is truncated, as torchvision does).
    """
    if name.startswith("resize-square"):
        return size, size
    if min(width, height) == size:
        return width, height
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def plan_transform(
    width: int, height: int, name: str, size: int, generator: torch.Generator | None = None
) -> Placement:
    """Draw the random steps of transform ``name`` for a ``width`` x ``height`` image.

    The draws are those :func:`apply_transform` makes, in the same order (crop top, crop left, flip).
    """
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of: {', '.join(TRANSFORMS)}")
    resized = resized_size(width, height, name, size)
    corner = (0, 0)
    if not name.startswith("resize-square"):
        random_crop = name.startswith("resize-random-crop")
        corner = crop_offsets(*resized, size, generator if random_crop else None)
    flip = name.endswith("-flip") and coin_flip(generator)
    return Placement(source=(width, height), resized=resized, corner=corner, flip=flip, size=size)


def apply_placement(image: Image.Image, placement: Placement, resample: int = Image.BILINEAR) -> Image.Image:
    """Resize, crop and flip ``image`` as planned (``Image.NEAREST`` for label maps).

    An image of another size than the planned source (a mask stored at half the resolution) is
    first scaled to the source size, so it lands on the same pixels as the image.
    """
    if image.size != placement.source:
        image = image.resize(placement.source, resample)
    if image.size != placement.resized:
        image = image.resize(placement.resized, resample)
    left, top = placement.corner
    if image.size != (placement.size, placement.size):
        image = image.crop((left, top, left + placement.size, top + placement.size))
    if placement.flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def place_box(box: tuple[float, float, float, float], placement: Placement) -> tuple[float, float, float, float] | None:
    """A box in source fractions -> the same box in fractions of the output square.

    The box is clipped to the square; ``None`` when nothing of it is left (cropped away).
    """
    width, height = placement.source
    scale_x, scale_y = placement.resized[0] / width, placement.resized[1] / height
    left, top = placement.corner
    size = placement.size
    x0, y0, x1, y1 = box
    xs = [(x * width * scale_x - left) / size for x in (x0, x1)]
    ys = [(y * height * scale_y - top) / size for y in (y0, y1)]
    if placement.flip:
        xs = [1.0 - xs[1], 1.0 - xs[0]]
    x0, x1 = (min(max(x, 0.0), 1.0) for x in xs)
    y0, y1 = (min(max(y, 0.0), 1.0) for y in ys)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def apply_transform(image: Image.Image, name: str, size: int, generator: torch.Generator | None = None) -> Image.Image:
    """Apply the transform ``name`` (one of :data:`lgvq_core.data.config.TRANSFORMS`)."""
    return apply_placement(image, plan_transform(*image.size, name, size, generator))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor ``3 h w`` with values x / 127.5 - 1."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # h w 3
    return pixels.permute(2, 0, 1).float().div_(127.5).sub_(1.0)
