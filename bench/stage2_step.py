"""A downstream training step on cached codes against the same step re-encoding the images each time.

A stage-2 run encodes each split once (the code cache) so a step never runs the image encoder. This
bench measures what that saves: one ``code-gpt`` optimizer step (forward, backward, AdamW) on a batch
of codes read from memory, against the same step preceded by encoding the batch's images with the
frozen tokenizer (``quantizer(encode(images))`` under ``no_grad``), as a run without the cache would
do. Same model, same batch, same device; both variants alternate, ``--steps`` times each, and the
medians are reported with their ratio. Data loading is left out of both (the images are already on
the device), which favours re-encoding.

The tokenizer is a randomly initialised ``vqgan`` (``--ch`` base channels, taming's 16x downsampling
levels); ``--paper`` uses the paper's sizes (vqgan ch 128 at 256 px, code-gpt 16 layers x 1024,
batch 36), for a GPU.

    python bench/stage2_step.py --device cpu
    python bench/stage2_step.py --device cuda --paper

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from harness import add_common_options, prepare

from lgvq_core.context import BuildContext
from lgvq_core.downstream import FrozenTokenizer
from lgvq_core.registry import get_registry
from lgvq_core.run_file import structure_component
from lgvq_tasks.generation.code_gpt import CodeGPT
from lgvq_tasks.generation.config import GPT_ADAM_BETAS, CodeGPTConfig


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_tokenizer(args, device: torch.device):
    """A frozen vqgan tokenizer built through the registry, as a tokenizer run builds it."""
    registry = get_registry()
    quantizer_table = {"type": "vq", "codebook_size": args.codebook_size, "dim": 256 if args.paper else 64}
    backbone_table = {"type": "vqgan", "perceptual_weight": 0.0, "perceptual_weights": None}
    if not args.paper:
        backbone_table.update(ch=args.ch, ch_mult=[1, 1, 2, 2, 4], z_channels=64, num_res_blocks=1)
    context = BuildContext(image_size=args.image_size, device=str(device))
    context.quantizer = registry.build("quantizer", structure_component("quantizer", quantizer_table), "$", context)
    tokenizer = registry.build("backbone", structure_component("backbone", backbone_table), "$", context)
    for parameter in tokenizer.parameters():
        parameter.requires_grad_(False)
    return tokenizer.to(device).eval()


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--ch", type=int, default=64, help="vqgan base channels (paper: 128)")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--paper", action="store_true", help="paper sizes: 256 px, vqgan ch 128, 16 x 1024, batch 36")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each variant")
    add_common_options(parser, repeats=None)
    args = parser.parse_args()
    if args.paper:
        args.image_size, args.ch, args.batch_size = 256, 128, 36
    device = prepare(args)

    tokenizer = build_tokenizer(args, device)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device) * 2 - 1
    with torch.no_grad():
        codes = tokenizer.quantizer(tokenizer.encode(images)).indices  # b h w, what the cache holds
    grid = tuple(codes.shape[1:])
    frozen = FrozenTokenizer(args.codebook_size, grid, 4, torch.zeros(args.codebook_size, 4))
    config = (
        CodeGPTConfig.paper(block_size=None)
        if args.paper
        else CodeGPTConfig(layers=args.layers, heads=args.heads, width=args.width)
    )
    prior = CodeGPT(config, frozen).to(device).train()
    optimizer = torch.optim.AdamW(prior.param_groups(0.01), lr=1e-4, betas=GPT_ADAM_BETAS)

    def step(reencode: bool) -> float:
        _synchronize(device)
        start = time.perf_counter()
        batch_codes = codes
        if reencode:
            with torch.no_grad():
                batch_codes = tokenizer.quantizer(tokenizer.encode(images)).indices
        loss = prior.training_loss({"codes": batch_codes})["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        return time.perf_counter() - start

    step(True), step(False)  # warm-up
    times: dict[str, list[float]] = {"cached": [], "reencode": []}
    for _ in range(args.steps):
        times["reencode"].append(step(True))
        times["cached"].append(step(False))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "bench": "stage2_step",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "vqgan_ch": args.ch,
        "grid": list(grid),
        "prior": {"layers": config.layers, "width": config.width},
        "seconds_per_step": {k: round(v, 4) for k, v in medians.items()},
        "speedup_cached": round(medians["reencode"] / medians["cached"], 2),
    }
    print(
        f"code-gpt {config.layers} layers x {config.width} on {device}, batch {args.batch_size} of "
        f"{args.image_size} px (vqgan ch {args.ch}, grid {grid[0]}x{grid[1]}), median of {args.steps} steps"
    )
    print(f"{'variant':>10}{'s/step':>10}")
    for name, value in medians.items():
        print(f"{name:>10}{value:>10.4f}")
    print(f"speed-up of the cache: {result['speedup_cached']}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
