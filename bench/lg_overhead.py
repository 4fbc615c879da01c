"""What the LG-VQ alignment losses add to a generator step, with and without the text cache.

Times one generator step (forward + backward + optimizer step) of a backbone alone, of the same
backbone with the three LG losses fed from the text feature cache, and with the text encoder run
on every step as the official code does. All three run in the same process on the same inputs,
interleaved, and the median of the timed steps after warm-up is reported. Component timings
(text encoding alone, the guidance module alone) show what dominates.

    python bench/lg_overhead.py --device cpu --image-size 64 --batch-size 8 --steps 20

With ``--run-file PATH`` the tokenizer, text encoder and alignment module are built from a run
file by the runner itself (``build_run``) and a step is the runner's own ``run_train_step``. The
variants are the file without ``[[alignment]]`` (``noLG``), the file as given (``LG``) and the file
with each ``--levers`` entry switched on (``+`` joins levers into one variant):

- ``trim``: the masked-contextual re-encoding runs on the batch's used columns only (the library
  always does this for an encoder whose ``padding_invisible`` holds; the other variants turn it off
  to show what it saves);
- ``vit``: ``[code_vit] width = --vit-width``, ``layers = --vit-layers``, ``heads = 1``;
- ``vocab``: masked-text ``vocabulary = "captions"``;
- ``decoder1``: masked-text ``decoder_layers = 1``;
- ``factored``: masked-text ``factored_cross_attention = true``;
- ``padmask``: masked-text ``attend_padding = false`` (drops all-padding decoder columns);
- ``fused`` / ``foreach``: ``train.optimizer_impl``;
- ``tokemb``: masked-text ``text_input = "token-embedding"`` (leak-free without the re-encoding);
- ``dwidth``: masked-text ``decoder_width = --decoder-width`` (the decoder runs at d instead of W);
- ``alignfp32``: ``run.alignment_precision = "fp32"`` (the alignment losses outside bf16/fp16 autocast);
- ``relwidth``: relation ``projection_width = --relation-width`` (g maps codes to p, not W).

``--set KEY=VALUE`` overrides a key of the run file in every variant.

Each LG variant also gets a breakdown: forward + backward of its code ViT, masked-text decoder and
vocabulary head, and the masked-caption re-encoding, each timed alone on the same batch.

    python bench/lg_overhead.py --run-file bench/lg_overhead_small.toml --image-size 32 --threads 1

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
from pathlib import Path
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
    parser.add_argument("--image-size", type=int, default=None, help="default 64 (--run-file: the file's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (--run-file: the file's)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ch", type=int, default=32, help="base channels of the backbone")
    parser.add_argument("--minilm-path", default=None, help="MiniLM model folder (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--run-file", type=Path, default=None, help="time the recipe of this run file")
    parser.add_argument(
        "--levers",
        default=DEFAULT_LEVERS,
        help=f"--run-file: comma list of {', '.join(LEVERS)}, several joined with + (one variant each)",
    )
    parser.add_argument("--vit-width", type=int, default=32, help="lever vit: [code_vit] width")
    parser.add_argument("--vit-layers", type=int, default=1, help="lever vit: [code_vit] layers")
    parser.add_argument("--decoder-width", type=int, default=64, help="lever dwidth: masked-text decoder_width")
    parser.add_argument("--relation-width", type=int, default=64, help="lever relwidth: relation projection_width")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="--run-file: override a key in every variant"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.run_file is not None:
        return run_file_main(args, parser)
    args.image_size = args.image_size or 64
    args.batch_size = args.batch_size or 8
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


# ------------------------------------------------------------------------------------------
# --run-file: the runner's own build and step, with and without each lever
# ------------------------------------------------------------------------------------------
#: Lever -> run-file overrides (``{mt}``: the masked-text table's index; ``{width}``, ``{layers}``: --vit-*;
#: ``{decoder_width}``: --decoder-width).
LEVERS = {
    "trim": [],
    "vit": ["code_vit.width={width}", "code_vit.layers={layers}", "code_vit.heads=1"],
    "vocab": ["alignment[{mt}].vocabulary=captions"],
    "decoder1": ["alignment[{mt}].decoder_layers=1"],
    "factored": ["alignment[{mt}].factored_cross_attention=true"],
    "padmask": ["alignment[{mt}].attend_padding=false"],
    "tokemb": ["alignment[{mt}].text_input=token-embedding"],
    "dwidth": ["alignment[{mt}].decoder_width={decoder_width}"],
    "fused": ["train.optimizer_impl=fused"],
    "foreach": ["train.optimizer_impl=foreach"],
    "alignfp32": ["run.alignment_precision=fp32"],
    "relwidth": ["alignment[{rel}].projection_width={relation_width}"],
}
ALL_LEVERS = "trim+vit+vocab+decoder1+factored"
DEFAULT_LEVERS = f"trim,vit,vocab,decoder1,factored,fused,{ALL_LEVERS},{ALL_LEVERS}+padmask"


def build_variant(args, overrides: list[str], workdir: str, trim: bool):
    """A run built by ``build_run`` from the run file with ``overrides``, its text cache warm."""
    from lgvq_core.run_file import load_run_file
    from lgvq_core.runner.components import build_run

    extra = [f"run.device={args.device}", f"run.output_dir={workdir}"]
    if args.image_size:
        extra.append(f"data.image_size={args.image_size}")
    if args.batch_size:
        extra.append(f"train.batch_size={args.batch_size}")
    loaded = load_run_file(args.run_file, overrides=[*extra, *args.set, *overrides])
    torch.manual_seed(0)
    run = build_run(loaded)
    if run.text_cache is not None and run.alignment is not None:
        run.text_cache.warm(sorted(set(run.train_data.all_captions())))
    if run.text_encoder is not None and not trim:
        run.text_encoder.padding_invisible = False  # what the re-encoding cost before trimming
    return run


def component_times(run, batch: dict, repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median ms of forward + backward of each LG part alone, on ``batch`` (the re-encoding: forward)."""
    from lgvq_core.alignment.base import AlignmentInputs
    from lgvq_core.alignment.masked_text import FactoredCodes, encode_masked, label_smoothed_nll

    alignment, encoder = run.alignment, run.text_encoder
    with torch.no_grad():
        quant = run.model(batch["image"].to(run.device)).quant
    quant = quant.detach().requires_grad_()
    text = run.text_features(batch["caption"]).to(run.device)
    parts: dict[str, Callable[[], Any]] = {}
    if alignment.code_vit is not None:
        parts["code_vit"] = lambda: alignment.code_vit(quant).square().sum().backward()
    relation = alignment.losses["relation"] if "relation" in alignment.losses else None
    if relation is not None and alignment.code_vit is not None:
        vit_tokens = alignment.code_vit(quant).detach().requires_grad_()
        codebook = run.model.quantizer.codebook
        indices = torch.zeros(quant.shape[0], *quant.shape[2:], dtype=torch.long, device=run.device)
        relation_inputs = AlignmentInputs(quant, text, vit_tokens, codebook, indices, encoder)
        parts["relation"] = lambda: relation(relation_inputs).backward()
    masked_text = alignment.losses["masked-text"] if "masked-text" in alignment.losses else None
    if masked_text is not None and alignment.code_vit is not None:
        features = alignment.code_vit.features(quant).detach().requires_grad_()
        if masked_text.config.factored_cross_attention:
            tokens = FactoredCodes(features, alignment.code_vit.proj)
        else:
            tokens = (features @ alignment.code_vit.proj).detach().requires_grad_()
        masked = masked_text.draw_mask(text, encoder) & text.word_mask
        rows = torch.randn(*text.ids.shape, masked_text.decoder_width, device=run.device)  # h0: b l d
        pad = text.pad_mask.bool()
        targets = masked & pad
        hidden = masked_text.decode(rows, tokens, pad)
        count = int(targets[:, : hidden.shape[1]].sum())
        width = hidden.shape[-1]
        parts["mt_decoder"] = lambda: masked_text.decode(rows, tokens, pad).square().sum().backward()
        head_input = torch.randn(count, width, device=run.device, requires_grad=True)
        labels = masked_text.head.columns(text.ids[targets].long())

        def head() -> None:
            logits = masked_text.head(head_input, encoder.token_embedding)
            label_smoothed_nll(logits, labels, masked_text.config.label_smoothing).sum().backward()

        parts["vocab_head"] = head
        if masked_text.config.text_input == "masked-contextual":

            def reencode() -> None:
                with torch.no_grad():
                    encode_masked(encoder, text, masked)

            parts["text_reencode"] = reencode
    times: dict[str, list[float]] = {name: [] for name in parts}
    for index in range(repeats + 1):
        for name, part in parts.items():
            sync()
            start = time.perf_counter()
            part()
            sync()
            if index:
                times[name].append(time.perf_counter() - start)
    alignment.zero_grad(set_to_none=True)
    return {name: round(median_ms(samples), 2) for name, samples in times.items()}


def run_file_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    import tempfile

    from lgvq_core.run_file import load_run_file
    from lgvq_core.runner.batches import BatchStream
    from lgvq_core.runner.step import run_train_step

    levers = [lever for lever in args.levers.split(",") if lever]
    for lever in levers:
        for part in lever.split("+"):
            if part not in LEVERS:
                parser.error(f"--levers: unknown lever {part!r}; choose from {', '.join(LEVERS)} (join with +)")
    config = load_run_file(args.run_file).config
    if not config.alignment:
        parser.error(f"--run-file {args.run_file}: the file has no [[alignment]] losses to time")
    kinds = [component.type for component in config.alignment]
    fill = {
        "mt": kinds.index("masked-text") if "masked-text" in kinds else -1,
        "rel": kinds.index("relation") if "relation" in kinds else -1,
    }
    fill.update(
        width=args.vit_width,
        layers=args.vit_layers,
        decoder_width=args.decoder_width,
        relation_width=args.relation_width,
    )
    sync = torch.cuda.synchronize if str(args.device).startswith("cuda") else (lambda: None)

    with tempfile.TemporaryDirectory(prefix="lgvq-lg-overhead-") as workdir:
        variants = {"noLG": build_variant(args, ["alignment=[]"], workdir, trim=False)}
        variants["LG"] = build_variant(args, [], workdir, trim=False)
        for lever in levers:
            parts = lever.split("+")
            for key, kind in (("mt", "masked-text"), ("rel", "relation")):
                if fill[key] < 0 and any("{" + key + "}" in o for p in parts for o in LEVERS[p]):
                    parser.error(f"--levers {lever}: the run file has no {kind} loss")
            overrides = [override.format(**fill) for part in parts for override in LEVERS[part]]
            variants[f"LG+{lever}"] = build_variant(args, overrides, workdir, trim="trim" in parts)
        first = variants["LG"]
        batch = BatchStream(first).next()  # one batch for every variant
        batch = {**batch, "image": batch["image"].to(first.device)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for index in range(args.warmup + args.steps):
            for name, run in variants.items():  # interleaved: drift hits every variant alike
                sync()
                start = time.perf_counter()
                run_train_step(run, [batch])
                sync()
                run.step += 1
                if index >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        breakdown = {
            name: component_times(run, batch, max(3, args.steps // 2), sync)
            for name, run in variants.items()
            if run.alignment is not None
        }

    ms = {name: median_ms(samples) for name, samples in times.items()}
    image_size = first.train_data.image_size
    side = image_size // first.model.downsample
    result = {
        "device": str(args.device),
        "run_file": str(args.run_file),
        "image_size": image_size,
        "batch_size": first.config.train.batch_size,
        "latent": f"{side}x{side}",
        "code_dim": first.model.code_dim,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "step_ms": {name: round(value, 2) for name, value in ms.items()},
        "ratio_vs_noLG": {name: round(value / ms["noLG"], 3) for name, value in ms.items()},
        "breakdown_ms": breakdown,
    }
    print(
        f"{args.run_file.name} on {args.device}: {result['image_size']}px, batch {result['batch_size']}, latent "
        f"{side}x{side}x{first.model.code_dim}, {torch.get_num_threads()} thread(s), median of {args.steps} "
        f"steps after {args.warmup} warm-up"
    )
    names = sorted({key for parts in breakdown.values() for key in parts})
    header = f"{'variant':<44}{'ms/step':>9}{'/noLG':>7}" + "".join(f"{name:>14}" for name in names)
    print(header)
    for name, value in ms.items():
        parts = breakdown.get(name, {})
        cells = "".join(f"{parts[key]:>14.1f}" if key in parts else f"{'-':>14}" for key in names)
        print(f"{name:<44}{value:>9.1f}{value / ms['noLG']:>7.2f}{cells}")
    print("(breakdown: forward + backward of each part alone, ms; text_reencode: forward only)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
