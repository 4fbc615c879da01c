"""text-to-image discrete diffusion: sampling time against the number of steps (e.g. 100, 25, 10).

Samples ``--samples`` images of ``--side``² codes from one randomly initialised ``text-to-image`` model
(T = 100) with random caption states, guidance ``--guidance`` (a doubled batch when != 1) and
truncation 0.86, once per step count, each ``--repeats`` times; medians are reported with the
ratio to the full 100 steps.

With ``--fid`` it also scores each step count on shapes: it trains a tiny tokenizer run (``tiny-ae``
on 32-pixel shapes, ``--fid-train-steps`` steps) and a tiny ``text-to-image`` run on its codes (same
number of steps) in a temporary folder through ``lgvq run``'s own code, then draws ``--fid-samples``
images per step count with the ``generation-fid`` machinery (``generate_images``: validation captions,
one seed) and computes their FID against as many validation images. The model is tiny and briefly
trained, so the FIDs only show the trend across step counts, not a quality the paper's model reaches.

    python bench/diffusion_sampling.py --device cpu --steps 100 25 10
    python bench/diffusion_sampling.py --device cpu --steps 100 25 10 --fid

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
from lgvq_tasks.generation.config import TextToImageConfig
from lgvq_tasks.generation.diffusion_model import TextToImageDiffusion


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--side", type=int, default=16, help="code grid side")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--paper", action="store_true", help="the paper's size: 19 layers, width 1024, 16 heads")
    parser.add_argument("--text-length", type=int, default=77)
    parser.add_argument("--text-width", type=int, default=512)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 25, 10])
    parser.add_argument(
        "--fid", action="store_true", help="also train a tiny model on shapes and report FID per step count"
    )
    parser.add_argument("--fid-samples", type=int, default=64, help="samples (and reference images) per FID")
    parser.add_argument("--fid-train-steps", type=int, default=400, help="training steps of each tiny run")
    add_common_options(parser, repeats=1)
    args = parser.parse_args()

    device = prepare(args)
    tokenizer = FrozenTokenizer(args.codebook_size, (args.side, args.side), 4, torch.zeros(args.codebook_size, 4))
    shape = {"text_length": args.text_length, "text_width": args.text_width}
    config = (
        TextToImageConfig.paper(**shape)
        if args.paper
        else TextToImageConfig(layers=args.layers, heads=args.heads, width=args.width, **shape)
    )
    model = TextToImageDiffusion(config, tokenizer).to(device).eval()
    condition = {
        "text_states": torch.randn(args.samples, args.text_length, args.text_width, device=device),
        "text_pad": torch.ones(args.samples, args.text_length, dtype=torch.bool, device=device),
    }

    def run(steps: int, seed: int) -> float:
        generator = torch.Generator(device).manual_seed(seed)
        synchronize(device)
        start = time.perf_counter()
        model.sample(condition, steps=steps, guidance_scale=args.guidance, generator=generator)
        synchronize(device)
        return time.perf_counter() - start

    run(min(args.steps), args.seed)  # warm-up
    seconds = {steps: statistics.median(run(steps, args.seed + r) for r in range(args.repeats)) for steps in args.steps}
    reference = seconds[max(args.steps)]
    result = {
        "bench": "diffusion_sampling",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "samples": args.samples,
        "sequence_length": args.side**2,
        "layers": config.layers,
        "width": config.width,
        "guidance": args.guidance,
        "seconds": {str(k): round(v, 3) for k, v in seconds.items()},
        "speedup_vs_most_steps": {str(k): round(reference / v, 2) for k, v in seconds.items()},
    }
    print(
        f"text-to-image {config.layers} layers x width {config.width} on {device}: {args.samples} samples x "
        f"{args.side**2} codes, guidance {args.guidance}, median of {args.repeats}"
    )
    print(f"{'steps':>6}{'s':>10}{'s/step':>10}{'speed-up':>10}")
    for steps, value in seconds.items():
        print(f"{steps:>6}{value:>10.2f}{value / steps:>10.3f}{reference / value:>10.1f}")
    if args.fid:
        result["fid"] = fid_per_step_count(args, device)
        print(
            f"FID on shapes, {args.fid_samples} samples vs {args.fid_samples} validation images; a TINY model "
            f"trained {args.fid_train_steps} steps: the numbers only show the trend across step counts"
        )
        print(f"{'steps':>6}{'FID':>10}")
        for steps, value in result["fid"]["fid"].items():
            print(f"{steps:>6}{value:>10.2f}")
    print(json.dumps(result))
    return result


def _train_tiny_runs(root, args, device: torch.device):
    """A tiny tokenizer run on 32-pixel shapes and a tiny text-to-image run on its codes; the latter's directory."""
    from lgvq_core.config.describe import dumps_toml
    from lgvq_core.run_file import load_run_file
    from lgvq_core.runner.loop import train

    run = {"seed": args.seed, "output_dir": str(root / "runs"), "progress": "off", "device": str(device)}
    schedule = {"batch_size": 16, "max_steps": args.fid_train_steps, "base_lr": 1e-3, "lr_scaling": "none"}
    schedule.update(val_every=args.fid_train_steps, checkpoint_every=args.fid_train_steps)
    tokenizer = {
        "run": {"name": "bench-tokenizer", **run},
        "model": {
            "backbone": {"type": "tiny-ae", "hidden": 32},
            "quantizer": {"type": "vq", "codebook_size": 64, "dim": 16},
        },
        "data": {"type": "shapes", "image_size": 32, "num_train": 1024, "num_val": max(64, args.fid_samples)},
        "text_encoder": {"type": "tiny-text", "width": 32},
        "train": schedule,
    }
    path = root / "tokenizer.toml"
    path.write_text(dumps_toml(tokenizer))
    tokenizer_dir = train(load_run_file(path)).run_dir
    model = {"type": "text-to-image", "layers": 2, "heads": 4, "width": 64}
    prior = {"run": {"name": "bench-t2i", **run}, "tokenizer": {"run_dir": str(tokenizer_dir)}, "downstream": model}
    prior["train"] = schedule
    path = root / "t2i.toml"
    path.write_text(dumps_toml(prior))
    return train(load_run_file(path)).run_dir


def fid_per_step_count(args, device: torch.device) -> dict:
    """FID of ``--fid-samples`` samples at each step count, against as many validation images."""
    import os
    import tempfile
    from pathlib import Path

    from lgvq_core.image_quality import to_unit_range
    from lgvq_core.runner.downstream_run import load_downstream_run
    from lgvq_core.runner.generate import generate_images
    from lgvq_tasks.fid import InceptionFeatures, SmallSplitFID
    from lgvq_tasks.split import LOCAL_METRIC

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ["LGVQ_CACHE_DIR"] = str(root / "cache")  # the bench's code and text caches go away with it
        run_dir = _train_tiny_runs(root, args, device)
        run = load_downstream_run(run_dir, "last", str(device))
        images = run.val_data.images
        real = torch.stack([images[i]["image"] for i in range(args.fid_samples)])
        scores, seconds = {}, {}
        for steps in args.steps:
            fid = SmallSplitFID(feature=InceptionFeatures(), **LOCAL_METRIC).to(device)
            fid.update(to_unit_range(real).to(device), real=True)
            start = time.perf_counter()
            generated, _ = generate_images(run, args.fid_samples, args.seed, {"steps": steps}, batch_size=32)
            seconds[str(steps)] = round(time.perf_counter() - start, 2)
            fid.update(to_unit_range(generated).to(device), real=False)
            scores[str(steps)] = round(float(fid.compute()), 2)
    return {
        "fid": scores,
        "sampling_seconds": seconds,
        "samples": args.fid_samples,
        "reference": {"dataset": "shapes", "split": "val", "images": args.fid_samples, "image_size": 32},
        "model": "TINY text-to-image (2 layers x 64) on a tiny-ae tokenizer (64 codes, 8x8 grid): trend only",
        "train_steps": args.fid_train_steps,
        "seed": args.seed,
    }


if __name__ == "__main__":
    main()
