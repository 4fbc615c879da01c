"""Spec records of lgvq-core's built-in data (config classes only: no torch at import)."""

from __future__ import annotations

from lgvq_core.data.config import (
    CelebAMaskHQConfig,
    CocoCaptionsConfig,
    CocoQAConfig,
    CubTextConfig,
    ImageTextFolderConfig,
    MMCelebAHQConfig,
    RefCocoConfig,
    SegmentationMapsConfig,
    ShapesConfig,
    TarShardsConfig,
    TextCapsConfig,
)
from lgvq_core.specs import ComponentSpec

DATASETS: list[ComponentSpec] = [
    ComponentSpec(
        name="shapes",
        summary="procedural coloured shapes with captions, ground truth, masks, questions, referring phrases and attributes; no files",
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
        name="tar-shards",
        summary="WebDataset-style tar shards (KEY.png|jpg + KEY.json captions), as `lgvq shards` writes them",
        config_cls=TarShardsConfig,
        factory="lgvq_core.data.tar_shards:build_tar_shards",
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
    ComponentSpec(
        name="celebamask-hq",
        summary="CelebAMask-HQ faces with 19-class part masks (segmentation) and MM-CelebA-HQ captions",
        config_cls=CelebAMaskHQConfig,
        factory="lgvq_core.data.celebamask:build_celebamask_hq",
    ),
    ComponentSpec(
        name="coco-qa",
        summary="COCO-QA questions with one-word answers (object, number, color, location) on COCO 2014 images",
        config_cls=CocoQAConfig,
        factory="lgvq_core.data.cocoqa:build_coco_qa",
    ),
    ComponentSpec(
        name="refcoco",
        summary="RefCOCO(+/g) referring expressions with boxes, in the refer toolkit's layout",
        config_cls=RefCocoConfig,
        factory="lgvq_core.data.refcoco:build_refcoco",
    ),
    ComponentSpec(
        name="segmentation-maps",
        summary="another dataset's label maps as one-hot C-channel images, to train a mask autoencoder",
        config_cls=SegmentationMapsConfig,
        factory="lgvq_core.data.segmentation_maps:build_segmentation_maps",
    ),
]
