"""Base config of every text encoder: context length and the feature cache (no torch)."""

from __future__ import annotations

from typing import Literal

import attrs

from lgvq_core.config.fields import option, positive


@attrs.define
class TextEncoderConfig:
    """Keys every ``[text_encoder]`` table has; encoder plugins subclass it."""

    context_length: int = option(30, "Tokens per caption L, specials included (LG-VQ: 30).", positive)
    cache: Literal["memory", "disk", "off"] = option(
        "memory",
        "Text feature cache: features are computed once per caption and kept in memory, "
        "also on disk (reused across runs), or recomputed every step (off).",
    )
    cache_dir: str | None = option(
        None, "Folder of the disk cache (default: $LGVQ_CACHE_DIR/text, or ~/.cache/lgvq/text)."
    )
    cache_dtype: Literal["float32", "float16", "bfloat16"] = option(
        "float32", "Dtype the cached token states are stored in."
    )
    batch_size: int = option(256, "Captions per batch when filling the cache.", positive)
