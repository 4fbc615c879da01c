"""The text feature cache: every caption goes through the frozen encoder once, in memory or on disk."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from pathlib import Path

import pytest
import torch

from lgvq_core.testing.config import TinyTextConfig
from lgvq_core.testing.doubles import TinyText
from lgvq_core.text_feature_cache import FORMAT_VERSION, TextFeatureCache, default_cache_dir, identity_folder_name

FIELDS = ("ids", "pad_mask", "word_mask", "token_states", "sentence")
CAPTIONS = [f"a {color} {shape} on a {ground} ground" for color in ("red", "blue", "green") for shape in ("square", "circle") for ground in ("white", "black")]  # fmt: skip


class RecordingText(TinyText):
    """The tiny encoder, recording every batch of captions it encodes."""

    def __init__(self, config: TinyTextConfig) -> None:
        super().__init__(config)
        with torch.no_grad():
            self.norm.weight.fill_(1.0)  # a unit LayerNorm scale: features that are not all zero
        self.batches: list[list[str]] = []

    def encode(self, captions):
        self.batches.append(list(captions))
        return super().encode(captions)

    @property
    def encoded_captions(self) -> list[str]:
        return [caption for batch in self.batches for caption in batch]


def tiny_config(**options) -> TinyTextConfig:
    return TinyTextConfig(**{"width": 16, "vocab_size": 128, "context_length": 12, **options})


@pytest.fixture
def encoder() -> RecordingText:
    return RecordingText(tiny_config())


def assert_features_equal(actual, expected, atol: float = 0.0) -> None:
    """Same ids and masks; the same float features, exactly or within ``atol``.

    Encoding a caption in another batch may change the last bits of its features, so comparisons
    with a fresh ``encode`` use a small tolerance; features read back from a cache are exact.
    """
    assert expected.token_states.abs().amax(dim=(1, 2)).gt(0.1).all()  # a comparison with substance
    assert expected.sentence.norm(dim=-1).gt(0.5).all()
    for name in FIELDS:
        a, e = getattr(actual, name), getattr(expected, name)
        assert a.dtype == e.dtype, name
        if atol == 0.0 or not a.is_floating_point():
            assert torch.equal(a, e), name
        else:
            torch.testing.assert_close(a, e, rtol=atol, atol=atol)


FRESH = 1e-5  # tolerance against a fresh encode in another batch


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------
def test_get_returns_the_encoder_features_stacked_in_request_order(encoder):
    cache = TextFeatureCache(encoder)
    request = [CAPTIONS[3], CAPTIONS[0], CAPTIONS[3], CAPTIONS[7]]
    cache.get(CAPTIONS[:2])  # some stored, some not
    assert_features_equal(cache.get(request), RecordingText(tiny_config()).encode(request), FRESH)


def test_no_caption_is_encoded_twice_across_requests(encoder):
    cache = TextFeatureCache(encoder)
    cache.get([CAPTIONS[0], CAPTIONS[1], CAPTIONS[0]])
    assert (cache.hits, cache.misses, cache.encoded) == (0, 2, 2)
    cache.get([CAPTIONS[1], CAPTIONS[2]])
    assert (cache.hits, cache.misses, cache.encoded) == (1, 3, 3)
    for _ in range(3):
        cache.get(CAPTIONS[:3])
    assert cache.encoded == 3
    assert sorted(encoder.encoded_captions) == sorted(CAPTIONS[:3])


def test_missing_captions_are_encoded_in_batches_of_batch_size(encoder):
    cache = TextFeatureCache(encoder, batch_size=2)
    cache.get([CAPTIONS[0]])
    cache.get(CAPTIONS[:6])
    assert [len(batch) for batch in encoder.batches] == [1, 2, 2, 1]


def test_warm_encodes_each_distinct_caption_once_and_reports_progress(encoder):
    cache = TextFeatureCache(encoder, batch_size=2)
    seen = []
    assert cache.warm(CAPTIONS[:5] + CAPTIONS[:5], progress=lambda done, total: seen.append((done, total))) == 5
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert cache.warm(CAPTIONS[:5]) == 0
    cache.get(CAPTIONS[:5])
    assert cache.misses == 0 and cache.encoded == 5


def test_rows_are_stored_compactly_and_returned_as_float32(encoder):
    cache = TextFeatureCache(encoder, dtype="float16")
    features = cache.get(CAPTIONS[:4])
    (chunk,) = cache._chunks
    assert chunk["token_states"].dtype == torch.float16 and chunk["ids"].dtype == torch.int32
    assert chunk["token_states"].device.type == "cpu"
    assert features.token_states.dtype == torch.float32 and features.ids.dtype == torch.long
    assert_features_equal(features, RecordingText(tiny_config()).encode(CAPTIONS[:4]), atol=1e-2)


def test_off_mode_encodes_every_request_and_stores_nothing(encoder):
    cache = TextFeatureCache(encoder, mode="off", batch_size=2)
    request = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[0], CAPTIONS[2]]
    assert_features_equal(cache.get(request), RecordingText(tiny_config()).encode(request), FRESH)
    cache.get(request)
    assert [len(batch) for batch in encoder.batches] == [2, 1, 2, 1]  # duplicates once, still batched
    assert cache.encoded == 6 and cache.hits == 0 and len(cache) == 0


def test_features_follow_the_requested_device(encoder):
    features = TextFeatureCache(encoder, device=torch.device("cpu")).get(CAPTIONS[:2])
    assert all(getattr(features, name).device.type == "cpu" for name in FIELDS)


def test_bad_settings_are_rejected(encoder):
    with pytest.raises(ValueError, match="mode"):
        TextFeatureCache(encoder, mode="ram")
    with pytest.raises(ValueError, match="dtype"):
        TextFeatureCache(encoder, dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        TextFeatureCache(encoder, batch_size=0)


def test_from_config_reads_the_cache_keys(encoder, tmp_path):
    config = tiny_config(cache="disk", cache_dir=str(tmp_path), cache_dtype="bfloat16", batch_size=3)
    cache = TextFeatureCache.from_config(encoder, config)
    assert (cache.mode, cache.dtype, cache.batch_size) == ("disk", "bfloat16", 3)
    assert cache.folder.parent == tmp_path


# ------------------------------------------------------------------------------------------
# disk
# ------------------------------------------------------------------------------------------
def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("shard-*.safetensors"))


def test_a_new_cache_reads_features_from_disk_without_encoding(encoder, tmp_path):
    first = TextFeatureCache(encoder, mode="disk", directory=tmp_path, batch_size=4)
    expected = first.get(CAPTIONS)
    assert len(shards(first.folder)) == 3
    again = RecordingText(tiny_config())
    second = TextFeatureCache(again, mode="disk", directory=tmp_path, batch_size=4)
    assert len(second) == len(CAPTIONS)
    assert_features_equal(second.get(CAPTIONS), expected)
    assert second.encoded == 0 and second.hits == len(CAPTIONS) and again.batches == []


def test_disk_folder_is_keyed_by_format_encoder_identity_and_dtype(encoder, tmp_path):
    cache = TextFeatureCache(encoder, mode="disk", directory=tmp_path)
    assert cache.folder.name == identity_folder_name(encoder.identity, "float32")
    assert cache.folder.name.startswith(f"v{FORMAT_VERSION}-")
    assert (cache.folder / "identity.txt").read_text().strip() == encoder.identity
    cache.get(CAPTIONS[:2])
    changed = RecordingText(tiny_config(seed=1))  # other weights: other identity
    stale = TextFeatureCache(changed, mode="disk", directory=tmp_path)
    assert stale.folder != cache.folder
    stale.get(CAPTIONS[:2])
    assert stale.encoded == 2
    assert TextFeatureCache(encoder, mode="disk", directory=tmp_path, dtype="float16").folder != cache.folder


def test_default_directory_is_the_text_folder_of_lgvq_cache_dir(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("LGVQ_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text"
    assert TextFeatureCache(encoder, mode="disk").folder.parent == tmp_path / "text"
    monkeypatch.delenv("LGVQ_CACHE_DIR")
    assert default_cache_dir() == Path("~/.cache/lgvq/text").expanduser()


def test_shards_are_written_whole_with_nothing_left_behind(encoder, tmp_path):
    cache = TextFeatureCache(encoder, mode="disk", directory=tmp_path, batch_size=5)
    cache.get(CAPTIONS)
    names = sorted(path.name for path in cache.folder.iterdir())
    assert names[0] == "identity.txt" and len(names) == 4
    assert all(name.startswith("shard-") and name.endswith(".safetensors") for name in names[1:])


def test_unreadable_shards_are_skipped_with_a_warning_and_encoded_again(encoder, tmp_path):
    writer = TextFeatureCache(encoder, mode="disk", directory=tmp_path, batch_size=6)
    expected = writer.get(CAPTIONS)
    first, second = shards(writer.folder)
    second.write_bytes(second.read_bytes()[:-100])  # a partial shard
    (writer.folder / "shard-0-garbage.safetensors").write_bytes(b"not a shard")
    (writer.folder / ".shard-1.safetensors.abc.tmp").write_bytes(b"an unfinished write")
    other = TextFeatureCache(RecordingText(tiny_config(seed=5)), mode="disk", directory=tmp_path / "other")
    other.get(["something else"])
    (foreign,) = shards(other.folder)
    os.replace(foreign, writer.folder / "shard-9-foreign.safetensors")  # another encoder's shard

    again = RecordingText(tiny_config())
    with pytest.warns(RuntimeWarning, match="skipping unreadable shard") as caught:
        reader = TextFeatureCache(again, mode="disk", directory=tmp_path, batch_size=6)
    assert len(caught) == 3  # partial, garbage, foreign; the temporary file is never read
    assert_features_equal(reader.get(CAPTIONS), expected, FRESH)
    assert reader.encoded == 6  # the partial shard's captions, encoded again


def test_a_shard_written_by_another_process_after_opening_is_found(encoder, tmp_path):
    reader = TextFeatureCache(encoder, mode="disk", directory=tmp_path)
    writer = TextFeatureCache(RecordingText(tiny_config()), mode="disk", directory=tmp_path)
    writer.get(CAPTIONS[:3])
    reader.get(CAPTIONS[:3])
    assert reader.encoded == 0 and encoder.batches == []


def _write_from_process(directory: str, captions: list[str], barrier) -> None:
    cache = TextFeatureCache(RecordingText(tiny_config()), mode="disk", directory=directory, batch_size=1)
    barrier.wait()
    cache.get(captions)


@pytest.mark.slow  # two fresh interpreters import torch
def test_two_processes_writing_one_cache_directory_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    halves = [CAPTIONS[:8], CAPTIONS[4:]]  # overlapping: both encode CAPTIONS[4:8]
    processes = [context.Process(target=_write_from_process, args=(str(tmp_path), half, barrier)) for half in halves]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in processes] == [0, 0]

    encoder = RecordingText(tiny_config())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shard may be unreadable
        reader = TextFeatureCache(encoder, mode="disk", directory=tmp_path)
        features = reader.get(CAPTIONS)
    assert len(shards(reader.folder)) == 16
    assert reader.encoded == 0 and encoder.batches == []
    assert_features_equal(features, RecordingText(tiny_config()).encode(CAPTIONS), FRESH)


def test_ranks_sharing_a_disk_cache_split_the_warm_up_and_each_caption_is_encoded_once(tmp_path):
    encoders = [RecordingText(tiny_config()), RecordingText(tiny_config())]
    caches = [TextFeatureCache(e, mode="disk", directory=tmp_path, batch_size=2) for e in encoders]
    done: list[int] = []

    def rank_one_writes_before_the_barrier_lets_rank_zero_go() -> None:
        done.append(caches[1].warm_shared(CAPTIONS, rank=1, world_size=2, wait=lambda: None))

    done.insert(
        0,
        caches[0].warm_shared(
            CAPTIONS, rank=0, world_size=2, wait=rank_one_writes_before_the_barrier_lets_rank_zero_go
        ),
    )
    assert done == [6, 6]
    assert encoders[0].encoded_captions == CAPTIONS[0::2] and encoders[1].encoded_captions == CAPTIONS[1::2]
    expected = RecordingText(tiny_config()).encode(CAPTIONS)
    for cache in caches:  # every rank serves every caption, the other rank's from its shards
        assert_features_equal(cache.get(CAPTIONS), expected, atol=FRESH)
        assert cache.encoded == 6
    assert encoders[0].encoded_captions == CAPTIONS[0::2]


def test_a_memory_cache_cannot_share_so_every_rank_warms_everything(encoder):
    cache = TextFeatureCache(encoder, mode="memory", batch_size=4)
    waited: list[bool] = []
    assert cache.warm_shared(CAPTIONS, rank=1, world_size=2, wait=lambda: waited.append(True)) == len(CAPTIONS)
    assert waited == [True] and sorted(encoder.encoded_captions) == sorted(CAPTIONS)
