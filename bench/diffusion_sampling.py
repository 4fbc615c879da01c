"""text-to-image discrete diffusion: sampling time against the number of steps (e.g. 100, 25, 10).

Samples ``--samples`` images of ``--side``² codes from one randomly initialised ``text-to-image`` model
(T = 100) with random caption states, guidance ``--guidance`` (a doubled batch when != 1) and
truncation 0.86, once per step count, each ``--repeats`` times; medians are reported with the
ratio to the full 100 steps. Timing only: sample quality (FID per step count) needs a trained model.

    python bench/diffusion_sampling.py --device cpu --steps 100 25 10

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lgvq_core.downstream import FrozenTokenizer
from lgvq_tasks.generation.config import TextToImageConfig
from lgvq_tasks.generation.diffusion_model import TextToImageDiffusion


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
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
        _synchronize(device)
        start = time.perf_counter()
        model.sample(condition, steps=steps, guidance_scale=args.guidance, generator=generator)
        _synchronize(device)
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
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
