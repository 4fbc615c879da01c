"""``mm-celeba-hq``: CelebA-HQ faces with the MM-CelebA-HQ captions (TediGAN).

Layout under ``root``::

    CelebA-HQ-img/<id>.jpg              as in the CelebAMask-HQ archive (data.images_dir)
    celeba-caption/<id>.txt             ten captions, one per line
    train/filenames.pickle              the ids of each split: a pickled list of names
    test/filenames.pickle               (the val split)

The pickles are read without running code from them: only a plain list (or tuple) of str or int
is accepted, anything that refers to a class or function is refused. Where a pickle is absent,
the same path with ``.txt`` (one id per line) is read instead. An id that would make a path outside
its folder (absolute, or climbing with ``..``) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lgvq_core.data.base import config_options, split_options
from lgvq_core.data.config import MMCelebAHQConfig
from lgvq_core.data.files import load_name_list, require_dir, resolve
from lgvq_core.data.inside_root import ListedPaths
from lgvq_core.data.listed import ListedImages


class MMCelebAHQ(ListedImages):
    name = "mm-celeba-hq"

    def __init__(self, config: MMCelebAHQConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        images_dir = require_dir(resolve(root, config.images_dir), "images_dir")
        captions_dir = require_dir(resolve(root, config.captions_dir), "captions_dir")
        key = "train_list" if split == "train" else "val_list"
        list_path = resolve(root, getattr(config, key))
        ids = load_name_list(list_path, key)
        source = list_path if list_path.is_file() else list_path.with_suffix(".txt")
        images = ListedPaths(images_dir, skip_bad_items)
        texts = ListedPaths(captions_dir, skip_bad_items)
        super().__init__(
            images=[
                images.join(f"{image_id}{config.image_ext}", f"{source}: entry {n}") for n, image_id in enumerate(ids)
            ],
            caption_files=[
                texts.join(f"{image_id}.txt", f"{source}: entry {n}", "caption file path")
                for n, image_id in enumerate(ids)
            ],
            refused={**images.refused, **texts.refused},
            source=str(source),
            split=split,
            skip_bad_items=skip_bad_items,
            log=log,
            **config_options(config),
        )


def build_mm_celeba_hq(config: MMCelebAHQConfig, context: Any) -> MMCelebAHQ:
    return MMCelebAHQ(config, **split_options(context))
