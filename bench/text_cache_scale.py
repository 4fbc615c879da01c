"""The disk text-feature cache at corpus scale: build time, disk size, opening and lookup cost.

A synthetic corpus of distinct captions is cached with features of the shape of CLIP ViT-B/32's
text tower (L 77, W 512, E 512; token states in ``--dtype``) produced by a stand-in encoder that
costs nothing, so the figures are those of the cache itself; the real encoder's rate is measured
separately on a sample (MiniLM, bundled) and added for the build-time estimate. Everything grows
linearly with the number of captions, so a run at ``--captions`` is extrapolated to ``--target``
(400 k by default) and the factor printed.

- build: one process warming every caption, then ``--processes`` processes sharing the cache
  folder (``TextFeatureCache.warm_shared``: each encodes every P-th caption, writes its shards,
  waits at a barrier, then indexes the others'); the shard rows are counted to show that no
  caption was encoded twice;
- open: a new cache indexing the folder from shard headers (what every rank does at start);
- lookup: ``TextFeatureCache.get`` of random batches, cold (a shard of ``--batch-size`` rows is
  read from disk on first use, and then stays in memory) and warm (every row already in memory).
  A process that has looked up every caption holds the whole cache in memory (the disk size).

    python bench/text_cache_scale.py --captions 4000 --processes 2

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lgvq_core.text_encoder import TextEncoder, TextFeatures  # noqa: E402
from lgvq_core.text_feature_cache import TextFeatureCache  # noqa: E402

#: CLIP ViT-B/32 text tower: context length, token width, sentence width.
CLIP_SHAPE = (77, 512, 512)
WORDS = ["red", "small", "smiling", "young", "bright", "dark", "striped", "tall", "wooden", "curly"]
NOUNS = ["bird", "woman", "man", "dog", "sign", "car", "tree", "house", "cat", "boat"]


def corpus(count: int) -> list[str]:
    """``count`` distinct captions of 8-14 words (the digits of i pick the words)."""
    captions = []
    for i in range(count):
        digits = [int(d) for d in f"{i:06d}"]
        words = ["a"] + [WORDS[d] for d in digits[:3]] + [NOUNS[digits[3]], "with"] + [WORDS[d] for d in digits[4:]]
        captions.append(" ".join(words + ["and", NOUNS[(i * 7) % 10], f"number {i}"]))
    return captions


class CostFreeText(TextEncoder):
    """Features of CLIP's text-tower shape, a cheap function of each caption's hash (no network)."""

    def __init__(self) -> None:
        super().__init__()
        self.context_length, self.width, self.embed_dim = CLIP_SHAPE
        self.identity = "bench-cost-free-clip-shape"
        self._embedding = nn.Parameter(torch.zeros(1, self.width), requires_grad=False)

    @property
    def token_embedding(self) -> torch.Tensor:
        return self._embedding

    def encode(self, captions: list[str]) -> TextFeatures:
        count, length = len(captions), self.context_length
        generator = torch.Generator().manual_seed(hash(tuple(captions)) % 2**31)
        ids = torch.randint(1, 1000, (count, length), generator=generator)
        pad_mask = torch.ones(count, length, dtype=torch.bool)
        token_states = torch.randn(count, length, self.width, generator=generator)
        sentence = torch.randn(count, self.embed_dim, generator=generator)
        return TextFeatures(ids, pad_mask, pad_mask.clone(), token_states, sentence)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def shard_rows(folder: Path) -> int:
    from safetensors import safe_open

    rows = 0
    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as shard:
            rows += shard.get_slice("ids").get_shape()[0]
    return rows


def _rank(directory: str, captions: list[str], rank: int, size: int, options: dict, barrier, out) -> None:
    torch.set_num_threads(1)
    cache = TextFeatureCache(CostFreeText(), mode="disk", directory=directory, **options)
    encoded = cache.warm_shared(captions, rank, size, wait=barrier.wait)
    out.put((rank, encoded, len(cache)))


def shared_build(directory: str, captions: list[str], processes: int, options: dict) -> tuple[float, list[tuple]]:
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_rank, args=(directory, captions, r, processes, options, barrier, out))
        for r in range(processes)
    ]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    results = sorted(out.get() for _ in workers)
    for worker in workers:
        worker.join()
    return time.perf_counter() - start, results


def encoder_rate(sample: list[str], notes: list[str]) -> tuple[str, float | None]:
    """Captions per second of the bundled MiniLM on this CPU (None when it is not available)."""
    from lgvq_core.context import BuildContext
    from lgvq_core.registry import get_registry

    try:
        encoder = get_registry().build("text_encoder", {"type": "minilm"}, "$.text_encoder", BuildContext())
    except Exception as exc:  # noqa: BLE001 - the cache figures stand without it
        notes.append(f"minilm unavailable ({type(exc).__name__}); build time excludes the encoder")
        return "none", None
    encoder = encoder.freeze()
    encoder.encode(sample[:32])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(sample), 64):
        encoder.encode(sample[i : i + 64])
    return "minilm", len(sample) / (time.perf_counter() - start)


def lookups(cache: TextFeatureCache, captions: list[str], batch: int, count: int, seed: int) -> tuple[list, list]:
    """Milliseconds per ``get`` of ``batch`` random captions: (those that read a shard from disk, the others)."""
    rng = random.Random(seed)
    cold, warm = [], []
    for _ in range(count):
        chosen = rng.sample(captions, batch)
        shards_before = len(cache._chunks)
        start = time.perf_counter()
        cache.get(chosen)
        elapsed = (time.perf_counter() - start) * 1e3
        (cold if len(cache._chunks) > shards_before else warm).append(elapsed)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captions", type=int, default=4000)
    parser.add_argument("--target", type=int, default=400_000, help="corpus size the figures are extrapolated to")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=256, help="captions per encoder call and per shard")
    parser.add_argument("--lookup-batch", type=int, default=8)
    parser.add_argument("--encoder-sample", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    captions = corpus(args.captions)
    options = {"dtype": args.dtype, "batch_size": args.batch_size}
    scale = args.target / args.captions
    notes: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="lgvq-text-cache-bench-"))
    try:
        single_dir = root / "single"
        start = time.perf_counter()
        built = TextFeatureCache(CostFreeText(), mode="disk", directory=single_dir, **options)
        built.warm(captions)
        single_s = time.perf_counter() - start
        disk = folder_bytes(single_dir)
        del built

        shared_dir = root / "shared"
        shared_s, ranks = shared_build(str(shared_dir), captions, args.processes, options)
        rows = shard_rows(shared_dir)

        start = time.perf_counter()
        opened = TextFeatureCache(CostFreeText(), mode="disk", directory=single_dir, **options)
        open_s = time.perf_counter() - start
        shard_load_ms, warm = lookups(opened, captions, args.lookup_batch, 400, seed=1)

        encoder_name, rate = encoder_rate(corpus(args.encoder_sample), notes)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    per_caption = disk / args.captions
    result = {
        "captions": args.captions,
        "target": args.target,
        "shape": {"L": CLIP_SHAPE[0], "W": CLIP_SHAPE[1], "E": CLIP_SHAPE[2], "dtype": args.dtype},
        "disk_bytes": disk,
        "disk_bytes_per_caption": per_caption,
        "disk_gb_at_target": per_caption * args.target / 1e9,
        "build_1_process_s": single_s,
        "build_shared_s": shared_s,
        "processes": args.processes,
        "encoded_per_rank": [r[1] for r in ranks],
        "shard_rows_shared": rows,
        "every_rank_sees": [r[2] for r in ranks],
        "cache_build_1_process_s_at_target": single_s * scale,
        "open_s": open_s,
        "open_s_at_target": open_s * scale,
        "lookup_cold_ms_median": statistics.median(shard_load_ms),
        "lookup_cold_count": len(shard_load_ms),
        "lookup_warm_ms_median": statistics.median(warm),
        "resident_bytes_at_target": per_caption * args.target,
        "encoder": encoder_name,
        "encoder_captions_per_s": rate,
        "encode_s_at_target_per_process": None if rate is None else args.target / rate,
        "notes": notes,
    }
    print(
        f"{args.captions} captions, features L {CLIP_SHAPE[0]} x W {CLIP_SHAPE[1]} ({args.dtype}), x{scale:g} to {args.target}"
    )
    print(f"disk: {disk / 1e6:.1f} MB ({per_caption / 1e3:.1f} kB per caption) -> {result['disk_gb_at_target']:.1f} GB")
    print(
        f"build, cache only: 1 process {single_s:.2f} s; {args.processes} sharing {shared_s:.2f} s "
        f"(encoded {result['encoded_per_rank']}, shard rows {rows}, each rank sees {result['every_rank_sees']})"
    )
    print(f"open (index shard headers): {open_s * 1e3:.1f} ms -> {open_s * scale:.1f} s")
    print(
        f"lookup of {args.lookup_batch}: cold {result['lookup_cold_ms_median']:.1f} ms "
        f"({len(shard_load_ms)} lookups read a shard), warm {result['lookup_warm_ms_median']:.2f} ms (medians)"
    )
    if rate is not None:
        print(
            f"encoder {encoder_name}: {rate:.0f} captions/s -> {args.target / rate / 60:.1f} min per process for {args.target}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
