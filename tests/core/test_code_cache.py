"""The code cache refuses files that are not the split's codes: it says so, moves them aside, encodes again."""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors.torch import save

from lgvq_core.code_cache import STALE_TEMPORARY_SECONDS, CodeCache, Expected, check_codes

EXPECTED = Expected(items=4, codebook_size=8, flip=True, grid=(2, 2))
KEY = "k" * 64


def good() -> dict[str, torch.Tensor]:
    indices = torch.arange(16, dtype=torch.int16).reshape(4, 2, 2) % 8
    return {"indices": indices, "indices_flipped": indices.flip(-1), "valid": torch.ones(4, dtype=torch.bool)}


def changed(**tensors) -> dict[str, torch.Tensor]:
    out = {**good(), **tensors}
    return {k: v for k, v in out.items() if v is not None}


BAD_TENSORS = {
    "float indices": (changed(indices=good()["indices"].float()), "'indices' holds torch.float32"),
    "wrong grid": (
        changed(indices=torch.zeros(4, 3, 3, dtype=torch.int16)),
        "code grids (3, 3), the tokenizer gives (2, 2)",
    ),
    "wrong item count": (
        changed(indices=torch.zeros(5, 2, 2, dtype=torch.int16)),
        "shape (5, 2, 2): 4 items were expected",
    ),
    "out of range": (changed(indices=torch.full((4, 2, 2), 8, dtype=torch.int16)), "outside 0..7 (codebook size 8)"),
    "negative": (changed(indices=torch.full((4, 2, 2), -1, dtype=torch.int16)), "from -1 to -1, outside 0..7"),
    "no valid": (changed(valid=None), "no 'valid' tensor"),
    "short valid": (changed(valid=torch.ones(3, dtype=torch.bool)), "'valid' is torch.bool of shape (3,)"),
    "no flipped": (changed(indices_flipped=None), "no 'indices_flipped' tensor"),
}


@pytest.mark.parametrize("name", list(BAD_TENSORS))
def test_a_file_with_the_wrong_tensors_is_reported_moved_aside_and_encoded_again(tmp_path, name):
    tensors, reason = BAD_TENSORS[name]
    cache = CodeCache(tmp_path)
    cache.path(KEY).write_bytes(save({k: v.contiguous() for k, v in tensors.items()}))
    assert reason in check_codes(tensors, EXPECTED)
    said = []
    codes = cache.get_or_encode(KEY, good, {}, said.append, EXPECTED)
    assert torch.equal(codes["indices"], good()["indices"])
    assert any(reason in line and "moved it to" in line and "encoding the split again" in line for line in said)
    assert (tmp_path / f"{KEY}.safetensors.bad").is_file()  # kept for a look, out of the way
    assert check_codes(cache.load(KEY, EXPECTED), EXPECTED) is None  # the new file is sound


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 7, os.urandom(4096), None],  # empty, truncated header, random bytes, cut good file
    ids=["empty", "short", "random", "truncated"],
)
def test_an_unreadable_file_is_said_once_and_encoded_again(tmp_path, content):
    cache = CodeCache(tmp_path)
    data = save({k: v.contiguous() for k, v in good().items()})
    cache.path(KEY).write_bytes(content if content is not None else data[: len(data) // 2])
    said = []
    cache.get_or_encode(KEY, good, {}, said.append, EXPECTED)
    assert sum("cannot be read" in line for line in said) == 1
    assert cache.load(KEY, EXPECTED) is not None


def test_a_folder_in_place_of_the_file_is_moved_aside(tmp_path):
    cache = CodeCache(tmp_path)
    cache.path(KEY).mkdir()
    (cache.path(KEY) / "x").write_text("x")
    said = []
    cache.get_or_encode(KEY, good, {}, said.append, EXPECTED)
    assert any("is not a file" in line for line in said) and cache.path(KEY).is_file()


def test_a_sound_file_is_reused_without_encoding(tmp_path):
    cache = CodeCache(tmp_path)
    cache.store(KEY, good(), {})
    said = []

    def refuse():
        raise AssertionError("encoded although the cache is sound")

    cache.get_or_encode(KEY, refuse, {}, said.append, EXPECTED)
    assert said == [f"codes: reusing {cache.path(KEY)}"]


def test_temporaries_of_interrupted_writes_are_removed_but_not_a_write_in_progress(tmp_path):
    cache = CodeCache(tmp_path)
    stale = tmp_path / f".{KEY}.safetensors.abc123.tmp"
    fresh = tmp_path / f".{'j' * 64}.safetensors.def456.tmp"  # another process writing right now
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    old = time.time() - STALE_TEMPORARY_SECONDS - 5
    os.utime(stale, (old, old))
    said = []
    cache.get_or_encode(KEY, good, {}, said.append, EXPECTED)
    assert not stale.exists() and fresh.exists()
    assert any("removed 1 temporary file(s) of interrupted writes" in line for line in said)
