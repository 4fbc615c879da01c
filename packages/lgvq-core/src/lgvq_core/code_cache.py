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
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Expected:
    """What a split's cached codes must be: item count, codebook size, flip and (when known) the grid."""

    items: int
    codebook_size: int
    flip: bool
    grid: tuple[int, ...] | None = None


def check_codes(tensors: Mapping[str, torch.Tensor], expected: Expected) -> str | None:
    """The first problem of a cache file's tensors against ``expected``; None when they are sound."""
    names = ["indices", "valid"] + (["indices_flipped"] if expected.flip else [])
    for name in names:
        if name not in tensors:
            return f"no {name!r} tensor"
    valid = tensors["valid"]
    if valid.dtype != torch.bool or tuple(valid.shape) != (expected.items,):
        return f"'valid' is {valid.dtype} of shape {tuple(valid.shape)}, not bool of shape ({expected.items},)"
    for name in names[:1] + names[2:]:
        indices = tensors[name]
        if indices.dtype not in (torch.int16, torch.int32, torch.int64):
            return f"{name!r} holds {indices.dtype}, not integer code indices"
        if indices.dim() < 2 or indices.shape[0] != expected.items:
            return f"{name!r} has shape {tuple(indices.shape)}: {expected.items} items were expected"
        if expected.grid is not None and tuple(indices.shape[1:]) != tuple(expected.grid):
            return f"{name!r} has code grids {tuple(indices.shape[1:])}, the tokenizer gives {tuple(expected.grid)}"
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= expected.codebook_size):
            return (
                f"{name!r} holds codes from {int(indices.min())} to {int(indices.max())}, outside "
                f"0..{expected.codebook_size - 1} (codebook size {expected.codebook_size})"
            )
    if expected.flip and tensors["indices_flipped"].shape != tensors["indices"].shape:
        return "'indices_flipped' and 'indices' differ in shape"
    return None


#: A temporary file of an interrupted write older than this is removed when the cache is used.
STALE_TEMPORARY_SECONDS = 600


class CodeCache:
    """The folder of cached code files (``<cache root>/codes``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(
        self, key: str, expected: Expected | None = None, log: Callable[[str], None] | None = None
    ) -> dict[str, torch.Tensor] | None:
        """The cached tensors, or ``None`` when absent.

        A file that cannot be read, or (with ``expected``) whose tensors are not that split's codes,
        is reported through ``log``, moved aside to ``<file>.bad`` and ``None`` returned: encode again.
        """
        path = self.path(key)
        if not path.exists():
            return None
        problem = None
        if not path.is_file():
            problem = "is not a file"
        else:
            try:
                tensors = load(path.read_bytes())
            except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
                problem = f"cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            else:
                reason = check_codes(tensors, expected) if expected is not None else None
                if reason is None:
                    return tensors
                problem = f"does not hold this split's codes: {reason}"
        aside = path.with_name(path.name + ".bad")
        if aside.is_dir():
            shutil.rmtree(aside)
        os.replace(path, aside)
        if log is not None:
            log(f"codes: {path} {problem}; moved it to {aside.name} and encoding the split again")
        return None

    def store(self, key: str, tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
        path = self.path(key)
        write_bytes_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata)))
        return path

    def remove_stale_temporaries(self, log: Callable[[str], None] = print) -> int:
        """Delete temporary files that interrupted writes left (older than :data:`STALE_TEMPORARY_SECONDS`)."""
        if not self.root.is_dir():
            return 0
        now, removed = time.time(), 0
        for path in self.root.glob(".*.safetensors.*.tmp"):
            try:
                if now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another process removed or renamed it meanwhile
                continue
        if removed:
            log(f"codes: removed {removed} temporary file(s) of interrupted writes from {self.root}")
        return removed

    def get_or_encode(
        self,
        key: str,
        encode: Callable[[], dict[str, torch.Tensor]],
        metadata: Mapping[str, str],
        log: Callable[[str], None] = print,
        expected: Expected | None = None,
    ) -> dict[str, torch.Tensor]:
        self.remove_stale_temporaries(log)
        cached = self.load(key, expected, log)
        if cached is not None:
            log(f"codes: reusing {self.path(key)}")
            return cached
        tensors = encode()
        path = self.store(key, tensors, metadata)
        log(f"codes: wrote {path}")
        return tensors
