"""code-gpt sampling with the KV cache against the same model recomputing the whole prefix each step.

Samples ``--samples`` sequences of ``--side``² codes (default 64 x 256) from one randomly initialised
``code-gpt`` twice from the same seed: with the cache (one new token per step against the stored keys
and values) and without it (the full sequence recomputed for every new code, as taming's sampler does).
Both runs must draw the same codes; the ratio of their times is the speed-up. Each variant runs
``--repeats`` times interleaved and the median is reported.

    python bench/prior_sampling.py --device cpu --layers 2 --width 128 --heads 4
    python bench/prior_sampling.py --device cuda --paper

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from harness import add_common_options, prepare, synchronize

from lgvq_core.downstream import FrozenTokenizer
from lgvq_tasks.generation.code_gpt import CodeGPT
from lgvq_tasks.generation.config import CodeGPTConfig


def timed_sample(prior: CodeGPT, samples: int, seed: int, use_cache: bool, device: torch.device):
    """(seconds, codes) of one batched sampling run from ``seed``."""
    generator = torch.Generator(device).manual_seed(seed)
    synchronize(device)
    start = time.perf_counter()
    codes = prior.sample(count=samples, generator=generator, top_k=100, use_cache=use_cache)
    synchronize(device)
    return time.perf_counter() - start, codes


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="sequences sampled in one batch")
    parser.add_argument("--side", type=int, default=16, help="code grid side (sequence length side²)")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--paper", action="store_true", help="the paper's size: 16 layers, 16 heads, width 1024")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    add_common_options(parser, repeats=1)
    args = parser.parse_args()

    device = prepare(args)
    grid = (args.side, args.side)
    tokenizer = FrozenTokenizer(args.codebook_size, grid, 4, torch.zeros(args.codebook_size, 4))
    config = (
        CodeGPTConfig.paper(block_size=None)
        if args.paper
        else CodeGPTConfig(layers=args.layers, heads=args.heads, width=args.width)
    )
    prior = CodeGPT(config, tokenizer).to(device, getattr(torch, args.dtype)).eval()
    parameters = sum(p.numel() for p in prior.parameters())

    timed_sample(prior, 2, args.seed, True, device)  # warm-up of both paths (kernels, allocator)
    timed_sample(prior, 2, args.seed, False, device)
    cached_times, uncached_times, identical = [], [], True
    for repeat in range(args.repeats):
        seconds, cached = timed_sample(prior, args.samples, args.seed + repeat, True, device)
        cached_times.append(seconds)
        seconds, uncached = timed_sample(prior, args.samples, args.seed + repeat, False, device)
        uncached_times.append(seconds)
        identical = identical and torch.equal(cached, uncached)
    cached_s, uncached_s = statistics.median(cached_times), statistics.median(uncached_times)
    codes = args.samples * args.side**2
    result = {
        "bench": "prior_sampling",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "samples": args.samples,
        "sequence_length": args.side**2,
        "layers": config.layers,
        "heads": config.heads,
        "width": config.width,
        "parameters": parameters,
        "repeats": args.repeats,
        "cached_s": round(cached_s, 3),
        "uncached_s": round(uncached_s, 3),
        "speedup": round(uncached_s / cached_s, 2),
        "cached_codes_per_s": round(codes / cached_s, 1),
        "identical_codes": identical,
    }
    print(
        f"code-gpt {config.layers} layers x {config.heads} heads x {config.width} ({parameters / 1e6:.1f}M parameters), "
        f"{args.dtype} on {device} ({torch.get_num_threads()} threads): {args.samples} x {args.side**2} codes, "
        f"top-k 100, median of {args.repeats}"
    )
    print(f"{'variant':<36}{'s':>10}{'codes/s':>12}")
    print(f"{'KV cache':<36}{cached_s:>10.2f}{codes / cached_s:>12.0f}")
    print(f"{'no cache (prefix recomputed)':<36}{uncached_s:>10.2f}{codes / uncached_s:>12.0f}")
    print(f"speed-up {uncached_s / cached_s:.1f}x; identical codes: {identical}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
