"""Frozen text features computed once per caption and reused.

docs/method.md: Training objective, "Computed once, not twice".

The text encoder never trains, so a caption's features never change: :class:`TextFeatureCache`
runs the encoder once per distinct caption and serves every later request from memory, and, in
``"disk"`` mode, from files that later runs (and other processes) reuse.

Disk layout: ``<directory>/v<format>-<sha256(identity)[:32]>-<dtype>/`` holds ``identity.txt`` and
shards ``shard-<time>-<pid>-<random>.safetensors``, one per encoded batch. Each shard carries its
captions, format version and encoder identity in its metadata, so the caption index is rebuilt
from shard headers alone. A shard is written to a temporary file in the same folder, fsynced and
renamed into place: readers see whole shards or none, and concurrent writers (several processes,
DDP ranks) never touch each other's files. A changed encoder (weights, settings, context length)
has another identity and so another folder: stale features are never reused. An unreadable shard
is skipped with a warning and its captions are encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import torch

from lgvq_core.atomic import write_bytes_atomic
from lgvq_core.text_encoder import TextEncoder, TextFeatures

#: Version of the disk format; part of the folder name, so a new format never reads old shards.
FORMAT_VERSION = 1
_FORMAT = "lgvq-text-features"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_FIELDS = ("ids", "pad_mask", "word_mask", "token_states", "sentence")
_SHARD_PREFIX = "shard-"
_SHARD_SUFFIX = ".safetensors"

CacheMode = Literal["memory", "disk", "off"]


def cache_root() -> Path:
    """The root of every lgvq cache: ``$LGVQ_CACHE_DIR`` if set, else ``~/.cache/lgvq``."""
    configured = os.environ.get("LGVQ_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path("~/.cache/lgvq").expanduser()


def default_cache_dir() -> Path:
    """Folder of the text feature cache: ``<cache root>/text``."""
    return cache_root() / "text"


def identity_folder_name(identity: str, dtype: str) -> str:
    """Folder of one encoder identity (and stored dtype) inside the cache directory."""
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    return f"v{FORMAT_VERSION}-{digest}-{dtype}"


class TextFeatureCache:
    """Text features per caption, encoded once in batches and served in request order.

    :param encoder: the frozen text encoder; its ``identity`` keys the disk cache.
    :param mode: ``"memory"`` (this process), ``"disk"`` (memory + shards reused across runs and
        processes) or ``"off"`` (encode on every request, store nothing).
    :param directory: root of the disk cache (default :func:`default_cache_dir`).
    :param dtype: dtype ``token_states`` are stored in; requests always return float32.
    :param batch_size: captions per encoder call (and per disk shard).
    :param device: where returned features live (default: the encoder's device).

    ``hits`` and ``misses`` count the distinct captions of each request that were, or were not,
    already stored (in memory or on disk); ``encoded`` counts captions run through the encoder.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        mode: CacheMode = "memory",
        directory: str | os.PathLike[str] | None = None,
        dtype: str = "float32",
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> None:
        if mode not in ("memory", "disk", "off"):
            raise ValueError(f'text cache mode must be "memory", "disk" or "off", got {mode!r}')
        if dtype not in _DTYPES:
            raise ValueError(f"text cache dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"text cache batch_size must be >= 1, got {batch_size}")
        self.encoder = encoder
        self.mode = mode
        self.dtype = dtype
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else None
        self.hits = 0
        self.misses = 0
        self.encoded = 0
        self._lock = threading.RLock()
        self._chunks: list[dict[str, torch.Tensor]] = []  # CPU, compact dtypes
        self._rows: dict[str, tuple[int, int]] = {}  # caption -> (chunk, row)
        self._disk_rows: dict[str, tuple[Path, int]] = {}  # caption -> (shard, row), not yet loaded
        self._known_shards: set[str] = set()
        self.folder: Path | None = None
        if mode == "disk":
            root = Path(directory).expanduser() if directory is not None else default_cache_dir()
            self.folder = root / identity_folder_name(encoder.identity, dtype)
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_identity_note()
            self._scan()

    @classmethod
    def from_config(cls, encoder: TextEncoder, config, device: str | torch.device | None = None) -> TextFeatureCache:
        """A cache set up by a :class:`~lgvq_core.text_encoder_config.TextEncoderConfig`'s cache keys."""
        return cls(
            encoder,
            mode=config.cache,
            directory=config.cache_dir,
            dtype=config.cache_dtype,
            batch_size=config.batch_size,
            device=device,
        )

    # ------------------------------------------------------------------------------------------
    # requests
    # ------------------------------------------------------------------------------------------
    def get(self, captions: Iterable[str]) -> TextFeatures:
        """Features of ``captions`` stacked in the given order (B×L, B×L×W, B×E) on ``device``."""
        captions = list(captions)
        if not captions:
            raise ValueError("TextFeatureCache.get needs at least one caption")
        with self._lock:
            distinct = list(dict.fromkeys(captions))
            if self.mode == "off":
                self.misses += len(distinct)
                chunk = self._encode_all(distinct)
                order = {caption: row for row, caption in enumerate(distinct)}
                index = torch.tensor([order[c] for c in captions])
                features = TextFeatures(**{name: chunk[name][index] for name in _FIELDS})
                return self._output(features)
            missing = self._ensure(distinct)
            self.hits += len(distinct) - missing
            self.misses += missing
            return self._output(self._gather(captions))

    def warm(self, captions: Iterable[str], progress: Callable[[int, int], None] | None = None) -> int:
        """Store the features of every distinct caption (a whole split); return how many were encoded.

        ``progress(done, total)`` is called after each encoded batch.
        """
        with self._lock:
            distinct = list(dict.fromkeys(captions))
            if self.mode == "off":
                return 0
            before = self.encoded
            self._ensure(distinct, progress)
            return self.encoded - before

    def warm_shared(self, captions: Iterable[str], rank: int, world_size: int, wait: Callable[[], None]) -> int:
        """:meth:`warm` by ``world_size`` processes sharing a ``"disk"`` cache, each caption encoded once.

        Rank ``r`` encodes every ``world_size``-th distinct caption from the ``r``-th and writes
        its shards; ``wait()`` (a barrier across the ranks) returns once every rank has written;
        then the other ranks' shards are indexed from their headers, to be loaded on first
        request. Returns how many captions this rank encoded. A ``"memory"`` cache cannot share,
        so every rank warms every caption; ``"off"`` warms nothing.
        """
        distinct = list(dict.fromkeys(captions))
        if self.mode != "disk" or world_size == 1:
            encoded = self.warm(distinct)
            wait()
            return encoded
        encoded = self.warm(distinct[rank::world_size])
        wait()
        with self._lock:
            self._scan()
        return encoded

    def __contains__(self, caption: object) -> bool:
        return caption in self._rows or caption in self._disk_rows

    def __len__(self) -> int:
        """Captions available without encoding (in memory or in known shards)."""
        return len(self._rows.keys() | self._disk_rows.keys())

    # ------------------------------------------------------------------------------------------
    # filling
    # ------------------------------------------------------------------------------------------
    def _ensure(self, distinct: list[str], progress: Callable[[int, int], None] | None = None) -> int:
        """Make every caption available in memory; return how many had to be encoded."""
        missing = [c for c in distinct if c not in self._rows]
        if missing and self.folder is not None:
            if any(c not in self._disk_rows for c in missing):
                self._scan()  # another process may have written them since
            self._load_from_disk(missing)
            missing = [c for c in missing if c not in self._rows]
        done = 0
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            chunk = self._encode(batch)
            self._add_chunk(batch, chunk)
            if self.folder is not None:
                self._write_shard(batch, chunk)
            done += len(batch)
            if progress is not None:
                progress(done, len(missing))
        return len(missing)

    def _encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        features = self.encoder.encode(captions)
        self.encoded += len(captions)
        return {
            "ids": features.ids.to("cpu", torch.int32),
            "pad_mask": features.pad_mask.to("cpu", torch.bool),
            "word_mask": features.word_mask.to("cpu", torch.bool),
            "token_states": features.token_states.to("cpu", _DTYPES[self.dtype]).contiguous(),
            "sentence": features.sentence.to("cpu", torch.float32).contiguous(),
        }

    def _encode_all(self, captions: list[str]) -> dict[str, torch.Tensor]:
        parts = [self._encode(captions[i : i + self.batch_size]) for i in range(0, len(captions), self.batch_size)]
        return {name: torch.cat([p[name] for p in parts]) for name in _FIELDS}

    def _add_chunk(self, captions: list[str], chunk: dict[str, torch.Tensor]) -> None:
        index = len(self._chunks)
        self._chunks.append(chunk)
        for row, caption in enumerate(captions):
            self._rows.setdefault(caption, (index, row))
            self._disk_rows.pop(caption, None)

    def _compact(self) -> None:
        """Merge the stored chunks into one once the later chunks hold as many rows as the first.

        A request then gathers with one ``index_select`` per field instead of one per chunk it
        touches (a batch of a warmed split touches most chunks). The first chunk at least doubles
        with each merge, so each row is copied O(log n) times in all.
        """
        if len(self._chunks) < 2:
            return
        sizes = [len(chunk["ids"]) for chunk in self._chunks]
        if sum(sizes[1:]) < sizes[0]:
            return
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self._chunks = [{name: torch.cat([chunk[name] for chunk in self._chunks]) for name in _FIELDS}]
        self._rows = {caption: (0, offsets[chunk] + row) for caption, (chunk, row) in self._rows.items()}

    def _gather(self, captions: list[str]) -> TextFeatures:
        self._compact()
        if len(self._chunks) == 1:
            index = torch.tensor([self._rows[caption][1] for caption in captions])
            return TextFeatures(**{name: self._chunks[0][name].index_select(0, index) for name in _FIELDS})
        # Group the requested rows by chunk: one index_select per chunk, then restore the order.
        by_chunk: dict[int, tuple[list[int], list[int]]] = {}
        for position, caption in enumerate(captions):
            chunk, row = self._rows[caption]
            rows, positions = by_chunk.setdefault(chunk, ([], []))
            rows.append(row)
            positions.append(position)
        parts, order = [], []
        for chunk, (rows, positions) in by_chunk.items():
            index = torch.tensor(rows)
            parts.append({name: self._chunks[chunk][name].index_select(0, index) for name in _FIELDS})
            order.extend(positions)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return TextFeatures(**{name: torch.cat([p[name] for p in parts]).index_select(0, inverse) for name in _FIELDS})

    def _output(self, features: TextFeatures) -> TextFeatures:
        device = self.device if self.device is not None else self.encoder.token_embedding.device
        non_blocking = device.type == "cuda"
        return TextFeatures(
            ids=features.ids.to(device, torch.long, non_blocking=non_blocking),
            pad_mask=features.pad_mask.to(device, non_blocking=non_blocking),
            word_mask=features.word_mask.to(device, non_blocking=non_blocking),
            token_states=features.token_states.to(device, torch.float32, non_blocking=non_blocking),
            sentence=features.sentence.to(device, torch.float32, non_blocking=non_blocking),
        )

    # ------------------------------------------------------------------------------------------
    # disk
    # ------------------------------------------------------------------------------------------
    def _write_identity_note(self) -> None:
        note = self.folder / "identity.txt"
        if not note.exists():
            write_bytes_atomic(note, (self.encoder.identity + "\n").encode("utf-8"))

    def _scan(self) -> None:
        """Index captions of shards not seen yet, from their headers only."""
        from safetensors import safe_open

        for path in sorted(self.folder.glob(f"{_SHARD_PREFIX}*{_SHARD_SUFFIX}")):
            if path.name in self._known_shards:
                continue
            self._known_shards.add(path.name)
            try:
                with safe_open(str(path), framework="pt") as shard:
                    metadata = shard.metadata() or {}
                    rows = shard.get_slice("ids").get_shape()[0]
                captions = self._check_metadata(metadata, rows)
            except Exception as exc:  # noqa: BLE001 - any unreadable shard is skipped, never fatal
                _warn_skipped(path, exc)
                continue
            for row, caption in enumerate(captions):
                if caption not in self._rows:
                    self._disk_rows.setdefault(caption, (path, row))

    def _check_metadata(self, metadata: dict[str, str], rows: int) -> list[str]:
        if metadata.get("format") != _FORMAT or metadata.get("version") != str(FORMAT_VERSION):
            raise ValueError(f"not a version-{FORMAT_VERSION} text feature shard")
        if metadata.get("identity") != self.encoder.identity:
            raise ValueError("written by another encoder (identity differs)")
        captions = json.loads(metadata["captions"])
        if not isinstance(captions, list) or len(captions) != rows or not all(isinstance(c, str) for c in captions):
            raise ValueError(f"its caption list does not match its {rows} rows")
        return captions

    def _load_from_disk(self, captions: list[str]) -> None:
        from safetensors import safe_open

        shards = list(dict.fromkeys(self._disk_rows[c][0] for c in captions if c in self._disk_rows))
        for path in shards:
            try:
                with safe_open(str(path), framework="pt") as shard:
                    metadata = shard.metadata() or {}
                    chunk = {name: shard.get_tensor(name) for name in _FIELDS}
                shard_captions = self._check_metadata(metadata, chunk["ids"].shape[0])
                self._check_chunk(chunk)
            except Exception as exc:  # noqa: BLE001 - fall back to encoding these captions
                _warn_skipped(path, exc)
                for caption in [c for c, (p, _) in self._disk_rows.items() if p == path]:
                    del self._disk_rows[caption]
                continue
            self._add_chunk(shard_captions, chunk)

    def _check_chunk(self, chunk: dict[str, torch.Tensor]) -> None:
        rows = chunk["ids"].shape[0]
        length, width = self.encoder.context_length, self.encoder.width
        expected = {
            "ids": ((rows, length), torch.int32),
            "pad_mask": ((rows, length), torch.bool),
            "word_mask": ((rows, length), torch.bool),
            "token_states": ((rows, length, width), _DTYPES[self.dtype]),
            "sentence": ((rows, self.encoder.embed_dim), torch.float32),
        }
        for name, (shape, dtype) in expected.items():
            tensor = chunk.get(name)
            if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise ValueError(f"tensor {name!r} is missing or not {dtype} {shape}")

    def _write_shard(self, captions: list[str], chunk: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        metadata = {
            "format": _FORMAT,
            "version": str(FORMAT_VERSION),
            "identity": self.encoder.identity,
            "dtype": self.dtype,
            "captions": json.dumps(captions, ensure_ascii=False),
        }
        name = f"{_SHARD_PREFIX}{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:12]}{_SHARD_SUFFIX}"
        path = self.folder / name
        write_bytes_atomic(path, save(chunk, metadata=metadata))
        self._known_shards.add(name)


def _warn_skipped(path: Path, exc: Exception) -> None:
    warnings.warn(
        f"text feature cache: skipping unreadable shard {path} ({type(exc).__name__}: {exc}); "
        "its captions are encoded again. Delete the file to silence this warning.",
        RuntimeWarning,
        stacklevel=3,
    )
