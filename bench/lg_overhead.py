"""What the LG-VQ alignment losses add to a generator step, with and without the text cache.

Times one generator step (forward + backward + optimizer step) of a backbone alone, of the same
backbone with the three LG losses fed from the text feature cache, and with the text encoder run
on every step as the official code does. All three run in the same process on the same inputs,
interleaved, and the median of the timed steps after warm-up is reported. Component timings
(text encoding alone, the guidance module alone) show what dominates.

    python bench/lg_overhead.py --device cpu --image-size 64 --batch-size 8 --steps 20

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import attrs  # noqa: E402
import torch  # noqa: E402

from lgvq_core.alignment.module import build_alignment_module  # noqa: E402
from lgvq_core.context import BuildContext  # noqa: E402
from lgvq_core.registry import get_registry  # noqa: E402

#: LG weights of the official CelebA-HQ / TextCaps configs (docs/method.md: Training objective).
WEIGHTS = {"semantic-nce": 0.001, "masked-text": 0.01, "relation": 0.0001}

ADJECTIVES = ["red", "small", "smiling", "young", "bright", "dark", "striped", "tall", "wooden", "curly"]
NOUNS = ["bird", "woman", "man", "dog", "sign", "car", "tree", "house", "cat", "boat"]
PARTS = ["wings", "hair", "eyes", "beak", "windows", "wheels", "leaves", "tail", "hat", "roof"]


def make_captions(count: int, seed: int = 0) -> list[str]:
    """Distinct captions of 8-20 words (LG-VQ keeps captions of at most 27 words)."""
    rng = random.Random(seed)
    captions = set()
    while len(captions) < count:
        words = [
            "a",
            rng.choice(ADJECTIVES),
            rng.choice(NOUNS),
            "with",
            rng.choice(ADJECTIVES),
            rng.choice(PARTS),
        ]
        for _ in range(rng.randint(0, 3)):
            words += ["and", rng.choice(ADJECTIVES), rng.choice(PARTS)]
        captions.add(" ".join(words))
    return sorted(captions)


def build_text_encoder(device: str, path: str | None, notes: list[str]) -> tuple[Any, str]:
    registry = get_registry()
    table = {"type": "minilm", **({"path": path} if path else {})}
    try:
        encoder = registry.build("text_encoder", table, "$.text_encoder", BuildContext(device=device))
        return encoder.freeze().float().to(device), "minilm"
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the test double, with a note
        notes.append(f"minilm unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); used tiny-text")
    encoder = registry.build(
        "text_encoder", {"type": "tiny-text", "width": 384, "vocab_size": 30522}, "$.text_encoder", BuildContext()
    )
    return encoder.freeze().to(device), "tiny-text"


def build_backbone(image_size: int, ch: int, device: str, notes: list[str]) -> tuple[Any, str]:
    """The real vqgan at a small config (only keys its config class has), else the tiny-ae double."""
    registry = get_registry()
    try:
        spec = registry.get_spec("backbone", "vqgan")
        fields = {f.name for f in attrs.fields(spec.config_cls)}
        small = {"ch": ch, "disc_start": 10**9, "perceptual_weight": 0.0}
        table = {"type": "vqgan", **{k: v for k, v in small.items() if k in fields}}
        return _build_with_quantizer(registry, spec, table, image_size, device), f"vqgan(ch={ch})"
    except Exception as exc:  # noqa: BLE001 - fall back with a note
        notes.append(f"vqgan unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); used tiny-ae")
    spec = registry.get_spec("backbone", "tiny-ae")
    table = {"type": "tiny-ae", "hidden": ch, "downsample": 16}
    return _build_with_quantizer(registry, spec, table, image_size, device), f"tiny-ae(hidden={ch}, f=16)"


def _build_with_quantizer(registry, spec, table: dict, image_size: int, device: str):
    quantizer_table = dict(getattr(spec, "default_quantizer", None) or {"type": "vq"})
    context = BuildContext(device=device, image_size=image_size)
    context.quantizer = registry.build("quantizer", quantizer_table, "$.model.quantizer", context)
    return registry.build("backbone", table, "$.model.backbone", context).to(device)


def median_ms(samples: list[float]) -> float:
    return 1000.0 * statistics.median(samples)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ch", type=int, default=32, help="base channels of the backbone")
    parser.add_argument("--minilm-path", default=None, help="MiniLM model folder (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    notes: list[str] = []

    encoder, encoder_name = build_text_encoder(device, args.minilm_path, notes)
    model, backbone_name = build_backbone(args.image_size, args.ch, device, notes)
    side = args.image_size // model.downsample
    context = BuildContext(device=device, text_encoder=encoder, code_dim=model.code_dim, latent_size=(side, side))
    registry = get_registry()
    losses = [
        (name, registry.build("alignment_loss", {"type": name, "weight": weight}, "$.alignment", context), weight)
        for name, weight in WEIGHTS.items()
    ]
    guidance = build_alignment_module(losses, code_vit_layers=2, code_vit_heads=1, context=context).to(device)

    captions = make_captions(max(64, 4 * args.batch_size))
    try:
        from lgvq_core.text_feature_cache import TextFeatureCache

        cache = TextFeatureCache(encoder, mode="memory", device=device)
        cache.warm(captions)
        cached_text: Callable[[list[str]], Any] = cache.get
        cache_name = "TextFeatureCache(memory)"
    except ImportError:
        table = {c: encoder.encode([c]) for c in captions}
        from lgvq_core.text_encoder import TextFeatures

        cached_text = lambda batch: TextFeatures.cat([table[c] for c in batch])  # noqa: E731
        cache_name = "precomputed dict"
        notes.append("lgvq_core.text_feature_cache missing; cached side = features precomputed in a dict")

    base_optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, betas=(0.5, 0.9))
    lg_optimizer = torch.optim.Adam([*model.parameters(), *guidance.parameters()], lr=1e-5, betas=(0.5, 0.9))
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device) * 2 - 1
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def batch_captions(step: int) -> list[str]:
        start = (step * args.batch_size) % len(captions)
        return [captions[(start + i) % len(captions)] for i in range(args.batch_size)]

    def step(variant: str, index: int) -> None:
        optimizer = base_optimizer if variant == "base" else lg_optimizer
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        total = model.generator_loss(images, output, 0, None)["total"]
        if variant != "base":
            names = batch_captions(index)
            text = cached_text(names) if variant == "lg_cached" else encoder.encode(names)
            terms = guidance(output.quant, text, model.quantizer.codebook, output.indices, encoder)
            total = total + guidance.weighted_sum(terms)
        total.backward()
        optimizer.step()

    def guidance_only(index: int) -> None:
        lg_optimizer.zero_grad(set_to_none=True)
        quant = torch.randn(args.batch_size, model.code_dim, side, side, device=device, requires_grad=True)
        terms = guidance(
            quant,
            cached_text(batch_captions(index)),
            model.quantizer.codebook,
            torch.zeros(args.batch_size, side, side, dtype=torch.long, device=device),
            encoder,
        )
        guidance.weighted_sum(terms).backward()

    measured: dict[str, Callable[[int], None]] = {
        "base": lambda i: step("base", i),
        "lg_cached": lambda i: step("lg_cached", i),
        "lg_uncached": lambda i: step("lg_uncached", i),
        "text_encode": lambda i: encoder.encode(batch_captions(i)),
        "cache_get": lambda i: cached_text(batch_captions(i)),
        "guidance_fwd_bwd": guidance_only,
    }
    times: dict[str, list[float]] = {name: [] for name in measured}
    for index in range(args.warmup + args.steps):
        for name, run in measured.items():  # interleaved: drift hits every variant alike
            sync()
            start = time.perf_counter()
            run(index)
            sync()
            if index >= args.warmup:
                times[name].append(time.perf_counter() - start)

    ms = {name: median_ms(samples) for name, samples in times.items()}
    result = {
        "device": str(device),
        "backbone": backbone_name,
        "text_encoder": encoder_name,
        "text_cache": cache_name,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "latent": f"{side}x{side}",
        "code_dim": model.code_dim,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "base_ms": round(ms["base"], 2),
        "lg_cached_ms": round(ms["lg_cached"], 2),
        "lg_uncached_ms": round(ms["lg_uncached"], 2),
        "text_encode_ms": round(ms["text_encode"], 2),
        "cache_get_ms": round(ms["cache_get"], 3),
        "guidance_fwd_bwd_ms": round(ms["guidance_fwd_bwd"], 2),
        "ratio_lg_cached": round(ms["lg_cached"] / ms["base"], 3),
        "ratio_lg_uncached": round(ms["lg_uncached"] / ms["base"], 3),
        "notes": notes,
    }
    print(
        f"{backbone_name} + {encoder_name} on {device}: {args.image_size}px, batch {args.batch_size}, "
        f"latent {side}x{side}x{model.code_dim}, median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'variant':<34}{'ms/step':>10}{'vs base':>10}")
    rows = [
        ("backbone only", ms["base"]),
        ("backbone + LG, cached text", ms["lg_cached"]),
        ("backbone + LG, text encoder each step", ms["lg_uncached"]),
    ]
    for label, value in rows:
        print(f"{label:<34}{value:>10.2f}{value / ms['base']:>10.3f}")
    print(f"{'  text encoder alone':<34}{ms['text_encode']:>10.2f}")
    print(f"{'  cache lookup alone':<34}{ms['cache_get']:>10.3f}")
    print(f"{'  guidance fwd+bwd alone':<34}{ms['guidance_fwd_bwd']:>10.2f}")
    for note in notes:
        print(f"note: {note}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
