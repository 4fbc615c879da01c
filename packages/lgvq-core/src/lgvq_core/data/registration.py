"""Spec records of lgvq-core's built-in data (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.data.config import (
    CocoCaptionsConfig,
    CubTextConfig,
    ImageTextFolderConfig,
    MMCelebAHQConfig,
    ShapesConfig,
    TextCapsConfig,
)
from lgvq_core.specs import ComponentSpec

DATASETS: list[ComponentSpec] = [
    ComponentSpec(
        name="shapes",
        summary="procedural coloured shapes with templated captions and ground truth; no files needed",
        config_cls=ShapesConfig,
        factory="lgvq_core.data.shapes:build_shapes",
    ),
    ComponentSpec(
        name="image-text-folder",
        summary="images under a folder with JSONL caption files: the format to convert any data set to",
        config_cls=ImageTextFolderConfig,
        factory="lgvq_core.data.folder:build_image_text_folder",
    ),
    ComponentSpec(
        name="coco-captions",
        summary="MS-COCO captions (2014 JSON layout), one item per image or per caption",
        config_cls=CocoCaptionsConfig,
        factory="lgvq_core.data.coco:build_coco_captions",
    ),
    ComponentSpec(
        name="cub-200-text",
        summary="CUB-200-2011 birds with Reed et al.'s ten captions per image",
        config_cls=CubTextConfig,
        factory="lgvq_core.data.cub:build_cub",
    ),
    ComponentSpec(
        name="mm-celeba-hq",
        summary="CelebA-HQ faces with the MM-CelebA-HQ captions",
        config_cls=MMCelebAHQConfig,
        factory="lgvq_core.data.celeba:build_mm_celeba_hq",
    ),
    ComponentSpec(
        name="textcaps",
        summary="TextCaps 0.1 JSON (Open Images photos with text), captions grouped per image",
        config_cls=TextCapsConfig,
        factory="lgvq_core.data.textcaps:build_textcaps",
    ),
]
