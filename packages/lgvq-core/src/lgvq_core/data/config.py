"""Config classes of the built-in datasets (no torch: ``lgvq check`` and ``lgvq schema`` stay fast).

Every file-based dataset has these keys, made by the field helpers below so that each class lists
its keys in reading order and carries its own official defaults (docs/method.md: Datasets):

- ``image_size``: side of the square images the dataset yields;
- ``train_transform`` / ``val_transform``: how an image of any size becomes ``image_size`` x
  ``image_size`` (see :data:`Transform`);
- ``max_caption_words`` and ``lowercase``: the caption rule.

Paths are relative to ``root`` unless absolute; ``root`` is relative to the working directory.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Literal

import attrs

from lgvq_core.config.fields import image_side, in_range, non_negative, option, positive
from lgvq_core.config.problems import Problem
from lgvq_core.config.schema import Component
from lgvq_core.data.annotations import SEGMENTATION, annotation_problem

#: How an image of any size becomes ``image_size`` x ``image_size``. "resize-square" scales both
#: sides to ``image_size``, distorting the aspect ratio (TextCaps' official ``Resize([256, 256])``);
#: the others scale the shorter side to ``image_size`` (bilinear, antialiased, as torchvision's
#: ``Resize(size)``) and cut the square from the centre or at a random offset. "-flip" mirrors the
#: image horizontally with probability 0.5. Random steps draw from the item's generator; an item
#: read without a seed gets the centre and no flip.
Transform = Literal[
    "resize-square",
    "resize-center-crop",
    "resize-center-crop-flip",
    "resize-random-crop",
    "resize-random-crop-flip",
]

TRANSFORMS: tuple[str, ...] = typing.get_args(Transform)


def _root() -> Any:
    return option(doc="Dataset folder (relative to the working directory, or absolute).")


def _image_size(default: int) -> Any:
    return option(default, "Side of the square images fed to the tokenizer (the paper uses 256).", image_side)


def _transform(default: str, split: str) -> Any:
    return option(
        default,
        f"How {split} images become image_size squares: scale the shorter side (resize-square: both sides), "
        "crop at the centre or at a random offset, and with -flip mirror half of them. Random steps apply to "
        "seeded items; an unseeded item always gets val_transform.",
    )


def _max_caption_words(default: int) -> Any:
    return option(
        default,
        "Sample a caption only among those with at most this many space-separated words (official: 27, i.e. "
        "words + 2 < 30 tokens); when none passes, the shortest is used and a warning is logged once. 0: no limit.",
        non_negative,
    )


def _lowercase() -> Any:
    return option(True, "Lowercase captions (official).")


def _relative_path(default: str, what: str) -> Any:
    return option(default, f"{what} (relative to root unless absolute).")


def _check_split_fraction(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not 0.0 < value < 1.0:
        raise ValueError(f"must be in (0, 1), got {value!r}")
    if (value is None) == (instance.val_file is None):
        raise ValueError(
            "give exactly one of val_file (a JSONL file of validation images) and val_fraction "
            "(e.g. 0.05: a seeded share of train_file's images)"
        )


def _check_max_shapes(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    in_range(1, 4)(instance, attribute, value)
    if value < instance.min_shapes:
        raise ValueError(f"must be >= min_shapes ({instance.min_shapes}), got {value!r}")


def _check_shape_sizes(instance: Any, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    small, large = value
    if not 0.05 <= small < large <= 0.8:
        raise ValueError(f"must be [small, large] with 0.05 <= small < large <= 0.8, got {list(value)!r}")
    if small > 0.4:  # shapes_scene.MAX_SMALL_SIDE: four small shapes must always fit
        raise ValueError(f"the small side must be at most 0.4 (so that four small shapes always fit), got {small!r}")


@attrs.define
class ShapesConfig:
    """Procedural images of 1-3 coloured shapes with templated captions and ground truth."""

    annotation_kinds: ClassVar[frozenset[str]] = frozenset({"segmentation", "questions", "referring", "attributes"})
    #: Label classes of the segmentation maps: background and the five shape kinds.
    segmentation_classes: ClassVar[int] = 6

    image_size: int = option(64, "Side of the generated square images.", image_side)
    num_train: int = option(2000, "Images in the train split.", positive)
    num_val: int = option(256, "Images in the val split.", positive)
    seed: int = option(
        0,
        "Dataset seed: the images and captions are a pure function of (seed, split, index); splits never share a stream.",
        non_negative,
    )
    min_shapes: int = option(1, "Fewest shapes in an image.", in_range(1, 4))
    max_shapes: int = option(3, "Most shapes in an image (at most 4; always >= min_shapes).", _check_max_shapes)
    captions_per_image: int = option(
        5, "Distinct captions per image (fewer when an image has fewer distinct phrasings).", in_range(1, 8)
    )
    background: Literal["plain", "varied"] = option(
        "varied", "plain: one flat colour; varied: a faint linear gradient in a random direction."
    )
    shape_sizes: tuple[float, float] = option(
        (0.22, 0.38),
        "Side of a small and of a large shape's layout square, as a share of the image side (each drawn "
        "0.92-1.08x). Larger shapes keep their kind recognisable in small images (at 32 px and f 4 a small "
        "shape of 0.22 spans 2x2 codes).",
        _check_shape_sizes,
    )

    def cross_check(self, run: Any, path: str) -> Any:

        batch_size = getattr(getattr(run, "train", None), "batch_size", None)
        if isinstance(batch_size, int) and batch_size > self.num_train:
            yield Problem(
                "$.train.batch_size",
                f"{batch_size} is more than the {self.num_train} training images ({path}.num_train): "
                "not one batch can be formed; lower train.batch_size or raise num_train",
            )

    @classmethod
    def contract_config(cls) -> ShapesConfig:
        return cls(image_size=32, num_train=8, num_val=4)


class ReadsFromDisk:
    """What the plugin contract needs of a dataset that reads files under ``root``: it is not built
    there (``contract_skip_build``), and its config is checked as ``cls(root="data")``."""

    contract_skip_build: ClassVar[str] = "it reads a data set from disk (data.root)"

    @classmethod
    def contract_config(cls) -> Any:
        return cls(root="data")  # type: ignore[call-arg]


@attrs.define
class TarShardsConfig:
    """WebDataset-style tar shards: ``shard-NNNNNN.tar`` files of ``KEY.png|jpg`` + ``KEY.json`` members.

    Each ``KEY.json`` holds ``{"captions": ["...", ...]}`` (or ``{"caption": "..."}``). ``lgvq shards``
    writes this layout from any dataset.
    """

    root: str = _root()
    train_dir: str = _relative_path("train", "Folder of the train split's shard-*.tar files")
    val_dir: str = _relative_path("val", "Folder of the val split's shard-*.tar files")
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-center-crop", "train")
    val_transform: Transform = _transform("resize-center-crop", "val")
    max_caption_words: int = _max_caption_words(27)
    lowercase: bool = _lowercase()

    contract_skip_build: ClassVar[str] = "it reads tar shards from disk (data.root)"

    @classmethod
    def contract_config(cls) -> TarShardsConfig:
        return cls(root="shards")


@attrs.define
class ImageTextFolderConfig(ReadsFromDisk):
    """Images under ``root`` listed in JSONL caption files: the format to convert any data set to.

    One JSON object per line, paths relative to ``root``::

        {"image": "photos/0001.jpg", "captions": ["a red bus on a street", "a bus parked by a kerb"]}

    ``"caption": "..."`` may replace ``"captions"`` for a single caption; lines naming the same
    image are merged. Blank lines are ignored.
    """

    root: str = _root()
    train_file: str = _relative_path(
        "train.jsonl",
        'JSONL file of the train split (with val_fraction: of both splits), one {"image": "<path relative to '
        'root>", "captions": ["...", ...]} object per line',
    )
    val_file: str | None = option(
        None, "JSONL file of the val split (relative to root unless absolute); give this or val_fraction."
    )
    val_fraction: float | None = option(
        None,
        "Instead of val_file: hold out this share of train_file's images as the val split (a seeded, "
        "reproducible choice).",
        _check_split_fraction,
    )
    split_seed: int = option(0, "Seed of the val_fraction split.")
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-center-crop", "train")
    val_transform: Transform = _transform("resize-center-crop", "val")
    max_caption_words: int = _max_caption_words(27)
    lowercase: bool = _lowercase()

    @classmethod
    def contract_config(cls) -> ImageTextFolderConfig:
        return cls(root="data", val_fraction=0.1)


@attrs.define
class CocoCaptionsConfig(ReadsFromDisk):
    """MS-COCO captions (2014 layout): ``annotations/captions_<split>2014.json`` + image folders."""

    root: str = _root()
    train_annotations: str = _relative_path(
        "annotations/captions_train2014.json", "COCO captions JSON of the train split"
    )
    val_annotations: str = _relative_path("annotations/captions_val2014.json", "COCO captions JSON of the val split")
    train_images: str = _relative_path("train2014", "Folder of the train images, named by the JSON's file_name")
    val_images: str = _relative_path("val2014", "Folder of the val images, named by the JSON's file_name")
    per_caption: bool = option(
        False,
        "One item per caption, as the official loader does (an epoch sees each image ~5 times); default: one "
        "item per image with a caption sampled from its captions.",
    )
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-center-crop-flip", "train")
    val_transform: Transform = _transform("resize-center-crop", "val")
    max_caption_words: int = _max_caption_words(0)
    lowercase: bool = _lowercase()


@attrs.define
class CubTextConfig(ReadsFromDisk):
    """CUB-200-2011 with the captions of Reed et al. (10 per image), on the official image-level split."""

    root: str = _root()
    images_dir: str = _relative_path("images", "Folder of the images, as listed in images.txt")
    text_dir: str = _relative_path(
        "birds/text",
        "Folder of the caption files <class>/<image>.txt, one caption per line ('text_c10' in Reed et al.'s "
        "cvpr2016_cub release)",
    )
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-random-crop-flip", "train")
    val_transform: Transform = _transform("resize-center-crop", "val")
    max_caption_words: int = _max_caption_words(27)
    lowercase: bool = _lowercase()


@attrs.define
class MMCelebAHQConfig(ReadsFromDisk):
    """CelebA-HQ faces with the MM-CelebA-HQ captions (10 per image)."""

    root: str = _root()
    images_dir: str = _relative_path(
        "CelebA-HQ-img", "Folder of the images <id><image_ext> (CelebA-HQ-img in the CelebAMask-HQ archive)"
    )
    image_ext: str = option(".jpg", "File extension of the images.")
    captions_dir: str = _relative_path("celeba-caption", "Folder of the caption files <id>.txt, one caption per line")
    train_list: str = _relative_path(
        "train/filenames.pickle",
        "Image ids of the train split: a pickled list of names (only plain lists are accepted) or, when it is "
        "absent, the same path with .txt (one id per line)",
    )
    val_list: str = _relative_path("test/filenames.pickle", "Image ids of the val split (same rules as train_list)")
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-center-crop", "train")
    val_transform: Transform = _transform("resize-center-crop", "val")
    max_caption_words: int = _max_caption_words(27)
    lowercase: bool = _lowercase()


@attrs.define
class TextCapsConfig(ReadsFromDisk):
    """TextCaps 0.1 JSON (``data`` entries with ``image_id`` and ``caption_str``/``reference_strs``)."""

    root: str = _root()
    train_annotations: str = _relative_path("TextCaps_0.1_train.json", "TextCaps JSON of the train split")
    val_annotations: str = _relative_path("TextCaps_0.1_val.json", "TextCaps JSON of the val split")
    train_images: str = _relative_path("train_images", "Folder of the train images")
    val_images: str = _relative_path(
        "train_images",
        "Folder of the val images: TextCaps' val images are Open Images train images, shipped in the same "
        "train_images folder by TextVQA",
    )
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-square", "train")
    val_transform: Transform = _transform("resize-square", "val")
    max_caption_words: int = _max_caption_words(27)
    lowercase: bool = _lowercase()


@attrs.define
class CelebAMaskHQConfig(ReadsFromDisk):
    """CelebAMask-HQ faces with their 19-class part masks, and captions from MM-CelebA-HQ."""

    annotation_kinds: ClassVar[frozenset[str]] = frozenset({"segmentation"})
    #: Label classes of the part masks: background and 18 parts.
    segmentation_classes: ClassVar[int] = 19

    root: str = _root()
    images_dir: str = _relative_path("CelebA-HQ-img", "Folder of the images <id><image_ext>")
    image_ext: str = option(".jpg", "File extension of the images.")
    masks_dir: str = _relative_path(
        "CelebAMask-HQ-mask-anno",
        "Folder of the part masks <id // 2000>/<id as 5 digits>_<part>.png (CelebAMask-HQ's layout)",
    )
    captions_dir: str = _relative_path(
        "celeba-caption",
        "Folder of MM-CelebA-HQ's caption files <id>.txt; when it does not exist, captions are made from "
        "attributes_file",
    )
    attributes_file: str = _relative_path(
        "CelebAMask-HQ-attribute-anno.txt",
        "CelebAMask-HQ's 40 attributes per image, the captions when captions_dir does not exist "
        '("a face: arched eyebrows, brown hair, smiling")',
    )
    train_list: str = _relative_path(
        "train/filenames.pickle",
        "Image ids of the train split (MM-CelebA-HQ's split): a pickled list of names (only plain lists are "
        "accepted) or, when it is absent, the same path with .txt (one id per line)",
    )
    val_list: str = _relative_path("test/filenames.pickle", "Image ids of the val split (same rules as train_list)")
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-center-crop", "train")
    val_transform: Transform = _transform("resize-center-crop", "val")
    max_caption_words: int = _max_caption_words(27)
    lowercase: bool = _lowercase()


def _check_image_name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        name = value.format(id=42)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"must be a file name pattern with {{id}}, e.g. 'COCO_train2014_{{id:012d}}.jpg'; {exc}"
        ) from None
    if "/" in name or "\\" in name or name == value:
        raise ValueError(
            f"must be a file name (no folder) that uses {{id}}, e.g. 'COCO_train2014_{{id:012d}}.jpg', got {value!r}"
        )


@attrs.define
class CocoQAConfig(ReadsFromDisk):
    """COCO-QA (Ren et al. 2015): questions with one-word answers on COCO 2014 images."""

    annotation_kinds: ClassVar[frozenset[str]] = frozenset({"questions"})

    root: str = _root()
    train_dir: str = _relative_path(
        "train", "Folder of the train split's questions.txt, answers.txt, img_ids.txt and types.txt"
    )
    val_dir: str = _relative_path("test", "Folder of the val split's four files (COCO-QA's test split)")
    train_images: str = _relative_path("train2014", "Folder of the COCO train2014 images (the train questions')")
    val_images: str = _relative_path("val2014", "Folder of the COCO val2014 images (the test questions')")
    train_image_name: str = option(
        "COCO_train2014_{id:012d}.jpg",
        "File name of a train image, from its id (a str.format pattern).",
        _check_image_name,
    )
    val_image_name: str = option(
        "COCO_val2014_{id:012d}.jpg", "File name of a val image, from its id.", _check_image_name
    )
    train_captions: str = _relative_path(
        "annotations/captions_train2014.json",
        "COCO captions JSON of the train images, used when it exists; otherwise (and for an image it lacks) an "
        "image's captions are its questions",
    )
    val_captions: str = _relative_path("annotations/captions_val2014.json", "COCO captions JSON of the val images")
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-square", "train")
    val_transform: Transform = _transform("resize-square", "val")
    max_caption_words: int = _max_caption_words(0)
    lowercase: bool = _lowercase()


RefCocoSplit = Literal["train", "val", "test", "testA", "testB"]


@attrs.define
class RefCocoConfig(ReadsFromDisk):
    """RefCOCO / RefCOCO+ / RefCOCOg in the layout of the ``refer`` toolkit, boxes from ``instances.json``."""

    annotation_kinds: ClassVar[frozenset[str]] = frozenset({"referring"})

    root: str = _root()
    refs_file: str = _relative_path(
        "refcoco/refs(unc).p",
        "The refs pickle (refcoco+: 'refcoco+/refs(unc).p', refcocog: 'refcocog/refs(umd).p'); read without "
        "running code: only plain data is accepted",
    )
    instances_file: str = _relative_path("refcoco/instances.json", "The instances JSON of the same release")
    images_dir: str = _relative_path(
        "images/mscoco/images/train2014", "Folder of the COCO train2014 images, named by instances.json's file_name"
    )
    train_split: RefCocoSplit = option("train", "Refs of this split make the train split.")
    val_split: RefCocoSplit = option(
        "val", "Refs of this split make the val split (RefCOCO: val, testA, testB; RefCOCOg umd: val, test)."
    )
    image_size: int = _image_size(256)
    train_transform: Transform = _transform("resize-square", "train")
    val_transform: Transform = _transform("resize-square", "val")
    max_caption_words: int = _max_caption_words(0)
    lowercase: bool = _lowercase()


def _optional_classes(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 2:
        raise ValueError(f"must be at least 2 (the background and one class) when set, got {value!r}")


@attrs.define
class SegmentationMapsConfig:
    """The label maps of another dataset as one-hot images: what a mask autoencoder trains on.

    Each item's ``image`` is the source item's label map as ``C x H x W`` one-hot channels scaled to
    {-1, +1} (+1 for the pixel's class, -1 elsewhere), so it lies in the [-1, 1] range every image
    has and a backbone trained on it with ``C`` input and output channels reconstructs it with its
    own loss; ``argmax`` over the channels turns a reconstruction back into labels. The captions are
    the source's. A ``code-gpt`` with ``semantic_source = "vq"`` names such a run as its
    ``[condition_tokenizer]``.
    """

    annotation_kinds: ClassVar[frozenset[str]] = frozenset()

    source: Component = option(
        doc="The dataset whose label maps are encoded (a [data.source] table with its own type; it must have "
        "segmentation annotations, e.g. shapes or celebamask-hq).",
        component="dataset",
    )
    classes: int | None = option(
        None,
        "Channels C of the one-hot maps (unset: the source's number of segmentation classes). A label >= C is an "
        "error naming the item.",
        _optional_classes,
    )

    def cross_check(self, run: Any, path: str) -> typing.Iterable[Any]:

        source = self.source
        kinds = getattr(type(source.config), "annotation_kinds", frozenset())
        if SEGMENTATION not in kinds:
            yield annotation_problem(f"{path}.source.type", source.type, SEGMENTATION)

    @classmethod
    def contract_config(cls) -> SegmentationMapsConfig:
        return cls(source=Component(type="shapes", config=ShapesConfig.contract_config()))
