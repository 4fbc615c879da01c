"""The contract of every image-caption dataset, and the batch collate the runner uses.

**Factory.** A dataset component's factory is called as ``factory(config, context)`` and returns a
:class:`CaptionedImages` for ``context.split`` (``"train"`` or ``"val"``). It reads
``context.skip_bad_items`` (the runner copies ``train.skip_bad_items`` there; ``False`` when the
context has no such field) and reports through ``context.log``.

**Keys.** An item is addressed by a key: an ``int`` index, or a tuple ``(index, seed)``.

- With a seed, every random choice for that item (which caption, crop offset, flip) is drawn from
  ``torch.Generator().manual_seed(seed)`` in a fixed order: the caption first, then the split's
  transform. Data order and augmentation are then a pure function of the keys a sampler yields,
  which makes resuming exact and independent of the number of loader workers.
- Without a seed, an item is deterministic evaluation data: the val transform (random steps at
  their centre / no-flip value) and the first caption that passes the caption rule.

**Items.** ``dataset[key]`` is a dict:

- ``image``: float tensor ``3 h w`` (h = w = ``image_size``), values x / 127.5 - 1 in [-1, 1];
- ``caption``: the sampled caption (str); ``captions``: every caption of the image (list[str]);
- ``index``: the item index (int).

A bad item (missing or unreadable image or caption file) raises :class:`DataError` naming the file,
or, when ``skip_bad_items`` is on, yields the marker ``{"index": i, "error": message}``.
:func:`collate` drops markers from the batch and returns them under ``skipped`` so the runner can
count and report them: nothing is dropped silently.

**Optional annotations** (:mod:`lgvq_core.data.annotations`). Besides captions, a dataset may have
any of four annotation kinds, which tasks ask for by name:

- ``dataset.annotation_kinds() -> frozenset[str]``: the kinds it has, among ``"segmentation"``,
  ``"questions"``, ``"referring"`` and ``"attributes"`` (its config class declares the same set as the class
  attribute ``annotation_kinds``, which ``lgvq check`` reads without building the dataset);
- ``dataset.require_annotations(*kinds)``: raises :class:`MissingAnnotationError` naming the
  dataset, the kind and the registered datasets that have it;
- ``dataset.segmentation(key) -> LongTensor h w`` (h = w = ``image_size``): class ids, 0 the
  background; ``dataset.segmentation_classes() -> tuple[str, ...]`` names them;
- ``dataset.questions(key) -> list[Question]``: ``Question(text, answer, type)`` with a
  single-word answer and ``type`` one of ``"object" "number" "color" "location"`` (COCO-QA's);
- ``dataset.referring(key) -> list[Referring]``: ``Referring(text, box, object_id)`` with ``box``
  ``(x0, y0, x1, y1)`` as fractions (``[0, 1]``) of the yielded image's side;
- ``dataset.attribute_classes() -> dict[str, tuple[str, ...]]``: attribute name -> class names,
  fixed for the dataset's config; ``dataset.attributes(key) -> dict[str, int]``: the class index
  of each of those attributes for the item's image, as an unseeded key yields it (a seeded key
  names the same item and gets the same classes).

Asking for a kind the dataset lacks raises :class:`MissingAnnotationError`. The ``key`` is the one
given to ``dataset[key]``, and the annotation is in the frame of that item's image: an unseeded key
gets the val transform (as the image does); a seeded key on the train split replays the item's
draws (caption, then crop offset and flip), so a cropped or flipped image comes with the same crop
or flip of its mask (nearest-neighbour) and boxes (clipped; a box cropped away entirely is left
out). A flip also swaps the words "left" and "right" in questions, answers and phrases, so that
they stay true of the mirrored image. A missing or unreadable annotation file raises
:class:`DataError` naming it; annotations are never skipped silently (the task decides).

**Caption rule** (docs/method.md: Datasets, official for CelebA-HQ, CUB and TextCaps): captions are stripped
and, with ``lowercase``, lowercased; a caption is sampled only among those with at most
``max_caption_words`` space-separated words (27: words + 2 < 30 tokens; 0 or ``None``: no limit).
When none passes, the shortest is used and the dataset logs a warning once.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lgvq_core.context import BuildContext
from lgvq_core.contracts import ContractError, require_instance
from lgvq_core.data.annotations import (
    ATTRIBUTES,
    QUESTIONS,
    REFERRING,
    SEGMENTATION,
    MissingAnnotationError,
    Question,
    Referring,
    mirror_words,
    missing_annotation_message,
)
from lgvq_core.data.config import TRANSFORMS
from lgvq_core.data.files import SKIP_HINT
from lgvq_core.data.transforms import Placement, apply_placement, place_box, plan_transform, to_tensor
from lgvq_core.errors import DataError

#: An item key: an index, or ``(index, seed)`` for a seeded (augmented, sampled) item.
Key = Union[int, tuple[int, int]]

SPLITS: tuple[str, ...] = ("train", "val")


def parse_key(key: Any, length: int) -> tuple[int, int | None]:
    """``key`` -> ``(index, seed)``, with ``seed`` ``None`` for an unseeded key.

    Raises ``IndexError`` outside ``[0, length)`` (negative indices are not wrapped: a sampler that
    produces one has a bug) and ``TypeError`` for anything but an int or an ``(int, int)`` pair.
    """
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"an item key is an index or (index, seed), got {key!r}")
        index, seed = operator.index(key[0]), operator.index(key[1])
    else:
        index, seed = operator.index(key), None
    if not 0 <= index < length:
        raise IndexError(f"item index {index} out of range for a dataset of {length} items")
    return index, seed


def item_generator(seed: int | None) -> torch.Generator | None:
    """The generator every random choice of a seeded item draws from (``None`` when unseeded)."""
    return None if seed is None else torch.Generator().manual_seed(seed)


def normalize_captions(lines: Sequence[str], lowercase: bool) -> list[str]:
    """Strip each caption, lowercase it when asked, drop empty ones."""
    captions = [line.strip() for line in lines]
    if lowercase:
        captions = [caption.lower() for caption in captions]
    return [caption for caption in captions if caption]


def word_count(caption: str) -> int:
    return len(caption.split())


class CaptionedImages(Dataset):
    """Base of every image-caption dataset; subclasses say where images and captions come from.

    A subclass implements ``__len__``, :meth:`_raw_captions` and :meth:`_load_image`, and may
    override :meth:`_caption_source` (for messages), :meth:`_caption_groups` (when several items
    share an image) and :meth:`ground_truth`. A subclass with annotations lists their kinds in
    :attr:`ANNOTATION_KINDS` and implements the matching ``_raw_*`` methods (in the untransformed
    image's frame) and, for segmentation and attributes, ``_segmentation_classes`` or
    ``_attribute_classes``; :meth:`_image_dimensions` may be overridden to read the size without decoding.
    """

    #: Registry name, used in messages.
    name: str = "dataset"
    #: The annotation kinds this dataset has (its config class declares the same set).
    ANNOTATION_KINDS: ClassVar[frozenset[str]] = frozenset()
    #: ``kind -> registered datasets that declare it``, set by the registry that built this dataset:
    #: a missing-annotation error then names them.
    annotation_index: Callable[[str], list[str]] | None = None

    def __init__(
        self,
        *,
        split: str,
        image_size: int,
        train_transform: str = "resize-center-crop",
        val_transform: str = "resize-center-crop",
        max_caption_words: int | None = 27,
        lowercase: bool = True,
        skip_bad_items: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        for transform in (train_transform, val_transform):
            if transform not in TRANSFORMS:
                raise ValueError(f"unknown transform {transform!r}; choose one of: {', '.join(TRANSFORMS)}")
        self.split = split
        self.image_size = image_size
        self.train_transform = train_transform
        self.val_transform = val_transform
        self.max_caption_words = max_caption_words
        self.lowercase = lowercase
        self.skip_bad_items = skip_bad_items
        self.log: Callable[[str], None] = log if log is not None else _print
        self._warned_long_captions = False

    # -- what a subclass provides ------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def _raw_captions(self, index: int) -> list[str]:
        """The image's captions as stored; raise :class:`DataError` naming the file when unreadable."""
        raise NotImplementedError

    def _load_image(self, index: int) -> Image.Image:
        """The image as RGB; raise :class:`DataError` naming the file when missing or unreadable."""
        raise NotImplementedError

    def _caption_source(self, index: int) -> str:
        """Where the captions of ``index`` come from, for messages."""
        return f"item {index} of {self.name} ({self.split})"

    def _caption_groups(self) -> Iterator[int]:
        """One item index per distinct image (items that share an image share its captions)."""
        return iter(range(len(self)))

    # -- the contract ------------------------------------------------------------------------
    def captions_of(self, index: int) -> list[str]:
        """Every caption of item ``index``, normalised, without loading the image."""
        captions = normalize_captions(self._raw_captions(index), self.lowercase)
        if not captions:
            raise DataError(f"{self._caption_source(index)} has no captions; {SKIP_HINT}")
        return captions

    def all_captions(self) -> Iterator[str]:
        """Every caption of the split, image by image (for text-cache warm-up and word priors).

        With ``skip_bad_items``, images whose captions cannot be read are left out and counted
        in one log line; otherwise the first one raises.
        """
        unreadable = 0
        for index in self._caption_groups():
            try:
                captions = self.captions_of(index)
            except DataError:
                if not self.skip_bad_items:
                    raise
                unreadable += 1
                continue
            yield from captions
        if unreadable:
            self.log(
                f"{self.name} ({self.split}): {unreadable} image(s) with unreadable captions left out of the caption "
                "list; they are reported as skipped when loaded"
            )

    def ground_truth(self, index: int) -> dict[str, Any] | None:
        """Per-image annotations for downstream tasks (boxes, attributes, relations); ``None`` here."""
        return None

    # -- optional annotations ----------------------------------------------------------------
    def annotation_kinds(self) -> frozenset[str]:
        """The annotation kinds this dataset has, among "segmentation", "questions", "referring", "attributes"."""
        return self.ANNOTATION_KINDS

    def require_annotations(self, *kinds: str) -> None:
        """Raise :class:`MissingAnnotationError` for the first of ``kinds`` this dataset lacks."""
        for kind in kinds:
            if kind not in self.annotation_kinds():
                having = self.annotation_index(kind) if self.annotation_index is not None else None
                raise MissingAnnotationError(missing_annotation_message(self.name, kind, having))

    def segmentation_classes(self) -> tuple[str, ...]:
        """Names of the segmentation classes, by id (``[0]`` is the background)."""
        self.require_annotations(SEGMENTATION)
        return self._segmentation_classes()

    def segmentation(self, key: Key) -> torch.Tensor:
        """The label map of item ``key``: ``long`` ``h w`` at ``image_size``, aligned with ``self[key]["image"]``."""
        self.require_annotations(SEGMENTATION)
        index, placement = self.placement(key)
        labels = apply_placement(self._raw_segmentation(index), placement, Image.NEAREST)
        return torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())  # h w

    def questions(self, key: Key) -> list[Question]:
        """The questions about item ``key``'s image (words mirrored when its image is flipped)."""
        self.require_annotations(QUESTIONS)
        index, placement = self.placement(key)
        found = self._raw_questions(index)
        return [question.mirrored() for question in found] if placement.flip else found

    def referring(self, key: Key) -> list[Referring]:
        """The referring expressions of item ``key``, boxes in the frame of ``self[key]["image"]``."""
        self.require_annotations(REFERRING)
        index, placement = self.placement(key)
        found = []
        for expression in self._raw_referring(index):
            box = place_box(expression.box, placement)
            if box is not None:
                text = mirror_words(expression.text) if placement.flip else expression.text
                found.append(Referring(text, box, expression.object_id))  # the box is flipped by place_box
        return found

    def attribute_classes(self) -> dict[str, tuple[str, ...]]:
        """Attribute name -> its class names, in a fixed order (the same for every item and split)."""
        self.require_annotations(ATTRIBUTES)
        return self._attribute_classes()

    def attributes(self, key: Key) -> dict[str, int]:
        """The class index of every attribute of item ``key``'s image (keys as in :meth:`attribute_classes`).

        Attributes describe the image an unseeded key yields; a seeded key names the same item.
        """
        self.require_annotations(ATTRIBUTES)
        index, _ = parse_key(key, len(self))
        return self._raw_attributes(index)

    def placement(self, key: Key) -> tuple[int, Placement]:
        """``(index, placement)``: how item ``key``'s image is resized, cropped and flipped.

        A seeded key replays the draws of ``self[key]`` in their order (the caption, then the
        transform), so the placement is the one its image got.
        """
        index, seed = parse_key(key, len(self))
        generator = item_generator(seed)
        if generator is not None:
            self.sample_caption(index, self.captions_of(index), generator)
        transform = self.train_transform if generator is not None and self.split == "train" else self.val_transform
        return index, plan_transform(*self._image_dimensions(index), transform, self.image_size, generator)

    def _image_dimensions(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of image ``index`` before the transform."""
        return self._load_image(index).size

    def _segmentation_classes(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _raw_segmentation(self, index: int) -> Image.Image:
        """Class ids as an ``L`` (or ``I``) image of any size, same frame as the untransformed image."""
        raise NotImplementedError

    def _raw_questions(self, index: int) -> list[Question]:
        raise NotImplementedError

    def _raw_referring(self, index: int) -> list[Referring]:
        """Expressions with boxes as fractions of the untransformed image."""
        raise NotImplementedError

    def _attribute_classes(self) -> dict[str, tuple[str, ...]]:
        raise NotImplementedError

    def _raw_attributes(self, index: int) -> dict[str, int]:
        raise NotImplementedError

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, seed = parse_key(key, len(self))
        generator = item_generator(seed)
        try:
            captions = self.captions_of(index)
            caption = self.sample_caption(index, captions, generator)
            image = self._load_image(index)
        except DataError as error:
            if not self.skip_bad_items:
                raise
            return {"index": index, "error": str(error).replace(f"; {SKIP_HINT}", "")}
        seeded_train = generator is not None and self.split == "train"
        transform = self.train_transform if seeded_train else self.val_transform
        image = apply_placement(image, plan_transform(*image.size, transform, self.image_size, generator))
        return {"image": to_tensor(image), "caption": caption, "captions": captions, "index": index}

    def sample_caption(self, index: int, captions: list[str], generator: torch.Generator | None) -> str:
        """The caption rule: sample among short enough captions (first one when unseeded)."""
        limit = self.max_caption_words
        pool = [c for c in captions if word_count(c) <= limit] if limit else captions
        if not pool:
            shortest = min(captions, key=word_count)
            if not self._warned_long_captions:
                self._warned_long_captions = True
                self.log(
                    f"warning: {self.name} ({self.split}): no caption of {self._caption_source(index)} has at most "
                    f"{limit} words; using its shortest ({word_count(shortest)} words). Raise data.max_caption_words "
                    "to sample longer captions (captions longer than the text length are truncated). "
                    "Reported once per dataset."
                )
            return shortest
        if generator is None:
            return pool[0]
        return pool[int(torch.randint(len(pool), (1,), generator=generator))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, items={len(self)})"


def _print(message: str) -> None:
    print(message, flush=True)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: stack images, list captions and indices, and report skipped items.

    Returns ``image`` (``b 3 h w``, or ``None`` when every item was skipped), ``caption``
    (list[str]), ``captions`` (list[list[str]]), ``index`` (list[int]) and ``skipped``: a list of
    ``(index, message)`` for the markers of bad items, which the runner counts and reports.
    """
    good = [item for item in items if "error" not in item]
    return {
        "image": torch.stack([item["image"] for item in good]) if good else None,
        "caption": [item["caption"] for item in good],
        "captions": [item["captions"] for item in good],
        "index": [item["index"] for item in good],
        "skipped": [(item["index"], item["error"]) for item in items if "error" in item],
    }


def config_options(config: Any) -> dict[str, Any]:
    """The keys every file-based dataset config shares, as :class:`CaptionedImages` arguments."""
    names = ("image_size", "train_transform", "val_transform", "max_caption_words", "lowercase")
    return {name: getattr(config, name) for name in names}


def split_options(context: Any) -> dict[str, Any]:
    """What a factory takes from the build context: split, skip_bad_items and log."""
    if context is None:
        context = BuildContext()
    return {
        "split": context.split,
        "skip_bad_items": bool(getattr(context, "skip_bad_items", False)),
        "log": context.log,
    }


def check_dataset(component: CaptionedImages, declared: frozenset[str]) -> None:
    """The dataset contract: items (plain and ``(index, seed)`` keys) with an image in [-1, 1] and a
    caption, and the annotation kinds its config class ``declared``, each of the documented type.
    Raises :class:`~lgvq_core.contracts.ContractError`."""
    require_instance(component, CaptionedImages)
    if len(component) < 1:
        raise ContractError("the dataset is empty")
    for key in (0, (0, 1234)):
        item = component[key]
        image = item.get("image")
        channels = getattr(component, "in_channels", 3)
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != channels:
            raise ContractError(f"item {key!r} has image {image!r}; expected a {channels}×h×w tensor")
        if float(image.min()) < -1.0 - 1e-6 or float(image.max()) > 1.0 + 1e-6:
            raise ContractError(f"item {key!r} has pixel values outside [-1, 1]")
        if not isinstance(item.get("caption"), str) or not item["caption"]:
            raise ContractError(f"item {key!r} has no caption: {item.get('caption')!r}")
    if component.annotation_kinds() != declared:
        raise ContractError(
            f"the dataset has annotations {sorted(component.annotation_kinds())} but its config class declares "
            f"annotation_kinds = {sorted(declared)}; make them the same (lgvq check reads the declaration)"
        )
    check_annotations(component)


def check_annotations(dataset: Any) -> None:
    """Each declared annotation kind of item 0 has the documented type, for both key kinds."""
    for key in (0, (0, 1234)):
        if "segmentation" in dataset.annotation_kinds():
            labels = dataset.segmentation(key)
            size = dataset.image_size
            if labels.dtype != torch.long or tuple(labels.shape) != (size, size):
                raise ContractError(
                    f"segmentation({key!r}) is {labels.dtype} {tuple(labels.shape)}; expected long {size}×{size}"
                )
            if int(labels.min()) < 0 or int(labels.max()) >= len(dataset.segmentation_classes()):
                raise ContractError(f"segmentation({key!r}) has class ids outside segmentation_classes()")
        if "questions" in dataset.annotation_kinds():
            if not all(isinstance(q, Question) for q in dataset.questions(key)):
                raise ContractError(f"questions({key!r}) must be a list of lgvq_core.data.annotations.Question")
        if "referring" in dataset.annotation_kinds():
            if not all(isinstance(r, Referring) for r in dataset.referring(key)):
                raise ContractError(f"referring({key!r}) must be a list of lgvq_core.data.annotations.Referring")
        if "attributes" in dataset.annotation_kinds():
            classes = dataset.attribute_classes()
            if not classes or not all(
                isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)
                for names in classes.values()
            ):
                raise ContractError("attribute_classes() must map each attribute to a non-empty tuple of class names")
            found = dataset.attributes(key)
            if set(found) != set(classes):
                raise ContractError(f"attributes({key!r}) has keys {sorted(found)}; expected {sorted(classes)}")
            bad = {name: v for name, v in found.items() if not (isinstance(v, int) and 0 <= v < len(classes[name]))}
            if bad:
                raise ContractError(f"attributes({key!r}) has class indices outside attribute_classes(): {bad}")
