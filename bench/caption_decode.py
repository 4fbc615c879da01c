"""Caption decoding benchmark: batched greedy decoding with a key/value cache against ClipCap's loop.

The same captioning model (scratch decoder, ``language_model`` defaults: width 256, 4 layers; ClipCap's
transformer mapper with a 10-token prefix over a 16x16 code grid, D 256, K 1024; random weights and a
1,000-word vocabulary) decodes the same prefixes two ways:

- ``uncached``: ClipCap's reference loop, one image at a time, the whole ``[prefix; tokens]`` sequence
  recomputed at every step (``greedy_decode_uncached``);
- ``cached``: all images in one batch, the prefix encoded once and one new token per step through the
  cache, finished captions leaving the batch (``greedy_decode``).

Both must produce identical token sequences (checked). Timed: decoding only (prefixes computed
beforehand), medians over ``--repeats``. A human table, then one JSON object as the last line.

On a shared CPU, ``--threads 1`` keeps the two loops from fighting other processes for cores.

    python bench/caption_decode.py [--device cpu] [--images 64] [--max-length 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from harness import add_common_options, prepare, time_median

from lgvq_core.downstream import FrozenTokenizer
from lgvq_tasks.language.captioning import CaptioningModel
from lgvq_tasks.language.config import CaptioningConfig, LanguageModelConfig
from lgvq_tasks.language.decoding import greedy_decode, greedy_decode_uncached
from lgvq_tasks.language.vocabulary import WordVocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images decoded (one batch when cached)")
    parser.add_argument("--max-length", type=int, default=20, help="tokens per caption at most (EOS counted)")
    parser.add_argument("--latent", type=int, default=16, help="code grid side h = w")
    parser.add_argument("--dim", type=int, default=256, help="code width D")
    parser.add_argument("--codebook-size", type=int, default=1024, help="codes K")
    parser.add_argument("--words", type=int, default=1000, help="vocabulary words")
    add_common_options(parser, repeats=3, device="cpu")
    args = parser.parse_args()

    device = prepare(args)
    generator = torch.Generator().manual_seed(args.seed)
    codebook = torch.randn(args.codebook_size, args.dim, generator=generator)
    tokenizer = FrozenTokenizer(args.codebook_size, (args.latent, args.latent), args.dim, codebook)
    vocabulary = WordVocabulary([f"word{i}" for i in range(args.words)])
    config = CaptioningConfig(
        prefix_mapper="transformer", language_model=LanguageModelConfig(max_text_length=args.max_length)
    )
    torch.manual_seed(args.seed)
    model = CaptioningModel(config, tokenizer, vocabulary).to(device).eval()
    with torch.no_grad():
        # a random decoder all but never picks EOS first: a nudge makes caption lengths vary as real ones do
        model.lm.decoder.token_embedding.weight[vocabulary.eos_id] *= 3.0
        codes = torch.randint(0, args.codebook_size, (args.images, args.latent, args.latent), generator=generator)
        prefix = model.prefix(codes.to(device))

    cached_tokens = greedy_decode(model.lm, prefix, args.max_length)
    uncached_tokens = greedy_decode_uncached(model.lm, prefix, args.max_length)
    same = cached_tokens == uncached_tokens
    lengths = [len(row) for row in cached_tokens]
    timings = {
        "uncached": time_median(
            lambda: greedy_decode_uncached(model.lm, prefix, args.max_length), device, args.repeats
        ),
        "cached": time_median(lambda: greedy_decode(model.lm, prefix, args.max_length), device, args.repeats),
    }
    ratio = timings["uncached"] / timings["cached"]
    print(
        f"{args.images} images, prefix {model.prefix_length} tokens, at most {args.max_length} tokens "
        f"(mean {statistics.mean(lengths):.1f} before EOS), device {device}, threads {torch.get_num_threads()}"
    )
    for name, seconds in timings.items():
        print(f"  {name:9s} {seconds * 1000:9.1f} ms  ({seconds / args.images * 1000:.2f} ms per image)")
    print(f"  cached batched decoding is {ratio:.1f}x faster; identical captions: {same}")
    print(
        json.dumps(
            {
                "images": args.images,
                "max_length": args.max_length,
                "mean_tokens": statistics.mean(lengths),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "seconds": timings,
                "speedup": ratio,
                "identical": same,
            }
        )
    )
    if not same:
        raise SystemExit("cached and uncached decoding disagree")


if __name__ == "__main__":
    main()
