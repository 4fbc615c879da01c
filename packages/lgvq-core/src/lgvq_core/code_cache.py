"""Code indices of a dataset split, computed once by a frozen tokenizer and kept on disk.

A downstream step never runs the image encoder: each split is encoded once, without
augmentation (the split's deterministic transform; optionally also flipped left-right), and the
indices are stored as one safetensors file, int16 when the codebook has at most 32767 codes.

The cache key is a hash of everything that decides the indices: the tokenizer checkpoint's
SHA-256, the dataset table, the split and the flip option. Runs that share them share the file;
a changed tokenizer or dataset gets a new one. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from lgvq_core.atomic import write_bytes_atomic
from lgvq_core.data.base import collate
from lgvq_core.errors import DataError

FORMAT_VERSION = 1
INT16_LIMIT = 32767


def cache_key(tokenizer_sha256: str, data_table: Mapping[str, Any], split: str, flip: bool) -> str:
    """Hex key of one split's codes."""
    identity = {
        "format": FORMAT_VERSION,
        "tokenizer": tokenizer_sha256,
        "data": data_table,
        "split": split,
        "flip": flip,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def index_dtype(codebook_size: int) -> torch.dtype:
    return torch.int16 if codebook_size <= INT16_LIMIT else torch.int32


@torch.no_grad()
def encode_split(
    tokenizer: torch.nn.Module,
    dataset: Any,
    device: torch.device,
    batch_size: int,
    flip: bool,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """``indices`` (n h w, or n k h w), ``valid`` (n, bool) and, with ``flip``, ``indices_flipped``.

    Items the dataset cannot read (``skip_bad_items``) are marked invalid, never dropped silently.
    """
    tokenizer.eval()
    codebook_size = tokenizer.quantizer.codebook_size
    dtype = index_dtype(codebook_size)
    chunks: dict[str, list[torch.Tensor]] = {"indices": [], "indices_flipped": []}
    valid = torch.zeros(len(dataset), dtype=torch.bool)
    shape = None
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        batch = collate([dataset[i] for i in range(start, stop)])
        good = torch.tensor(batch["index"], dtype=torch.long)
        valid[good] = True
        if batch["image"] is None:
            continue
        images = batch["image"].to(device)
        views = {"indices": images}
        if flip:
            views["indices_flipped"] = images.flip(-1)
        for name, view in views.items():
            indices = tokenizer.quantizer(tokenizer.encode(view)).indices
            shape = tuple(indices.shape[1:])
            full = torch.zeros((stop - start, *shape), dtype=dtype)
            full[good - start] = indices.to("cpu", dtype)
            chunks[name].append(full)
        if progress is not None:
            progress(stop, len(dataset))
    if shape is None:
        raise DataError(f"no item of the {getattr(dataset, 'split', '?')} split could be read; nothing to encode")
    out = {"indices": torch.cat(chunks["indices"]), "valid": valid}
    if flip:
        out["indices_flipped"] = torch.cat(chunks["indices_flipped"])
    return out


class CodeCache:
    """The folder of cached code files (``<cache root>/codes``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """The cached tensors, or ``None`` when absent; an unreadable file is reported and rebuilt."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return load(path.read_bytes())
        except (SafetensorError, OSError, ValueError):
            return None

    def store(self, key: str, tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
        path = self.path(key)
        write_bytes_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata)))
        return path

    def get_or_encode(
        self,
        key: str,
        encode: Callable[[], dict[str, torch.Tensor]],
        metadata: Mapping[str, str],
        log: Callable[[str], None] = print,
    ) -> dict[str, torch.Tensor]:
        cached = self.load(key)
        if cached is not None:
            log(f"codes: reusing {self.path(key)}")
            return cached
        tensors = encode()
        path = self.store(key, tensors, metadata)
        log(f"codes: wrote {path}")
        return tensors
