"""Quantizer benchmark: lgvq's ``vq`` against the bare distance matmul and vector-quantize-pytorch.

At the paper shape (8 images × 16×16 latents, D 256, K 1024) it times, on the same inputs:

- ``matmul``: the bare lookup a quantizer cannot avoid, ``addmm(||e||², z, eᵀ, alpha=-2).argmin(1)``
  on already flattened latents (forward only: argmin has no gradient);
- ``matmul_min``: the same lookup with ``min(1).indices`` in place of ``argmin(1)`` (the same
  index, the first minimum; on CPU a faster kernel, and what ``vq`` uses): the tightest baseline;
- ``vq``: lgvq's ``vq`` quantizer, forward + backward (upstream gradient on ``quant`` plus its loss);
- ``peer_default``: ``vector_quantize_pytorch.VectorQuantize`` with its default settings
  (EMA codebook, rotation trick), forward + backward;
- ``peer_st``: ``VectorQuantize`` as a straight-through quantizer with a learned codebook
  (``learnable_codebook=True, ema_update=False, rotation_trick=False``), forward + backward.

Medians over the timed repeats. A human table, then one JSON object as the last line.

    python bench/quantizer.py [--device cuda] [--repeats 30] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from harness import add_common_options, prepare, time_median

from lgvq_core.quantizers.vq import VectorQuantizer


def forward_backward(module: torch.nn.Module, run: Callable, z: torch.Tensor, upstream: torch.Tensor):
    """A step: quantize a fresh leaf copy of ``z``; backpropagate ``upstream`` into quant, 1 into the loss."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        latents = z.detach().requires_grad_(True)
        quant, loss = run(latents)
        torch.autograd.backward((quant, loss), (upstream, None))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--latent", type=int, default=16, help="latent side h = w")
    parser.add_argument("--dim", type=int, default=256, help="code width D")
    parser.add_argument("--codebook-size", type=int, default=1024, help="codes K")
    parser.add_argument("--warmup", type=int, default=5)
    add_common_options(parser, repeats=30)
    args = parser.parse_args()

    from vector_quantize_pytorch import VectorQuantize

    device = prepare(args)
    shape = (args.batch, args.dim, args.latent, args.latent)
    z = torch.randn(shape, device=device)
    upstream = torch.randn(shape, device=device)

    vq = VectorQuantizer(args.codebook_size, args.dim).to(device).train()
    with torch.no_grad():  # codes on the scale of the inputs, so that many codes are picked
        vq.embedding.weight.normal_()
    codebook = vq.embedding.weight.detach().clone()
    flat = z.permute(0, 2, 3, 1).reshape(-1, args.dim).contiguous()

    def bare_matmul() -> None:
        torch.addmm(codebook.pow(2).sum(1), flat, codebook.t(), alpha=-2.0).argmin(1)

    def bare_matmul_min() -> None:
        torch.addmm(codebook.pow(2).sum(1), flat, codebook.t(), alpha=-2.0).min(1)

    def run_vq(latents):
        out = vq(latents)
        return out.quant, out.loss

    peer_default = VectorQuantize(dim=args.dim, codebook_size=args.codebook_size, accept_image_fmap=True)
    peer_st = VectorQuantize(
        dim=args.dim,
        codebook_size=args.codebook_size,
        accept_image_fmap=True,
        learnable_codebook=True,
        ema_update=False,
        rotation_trick=False,
    )
    for peer in (peer_default, peer_st):
        peer.to(device).train()
        with torch.no_grad():
            peer._codebook.embed.copy_(codebook[None])

    def peer_runner(peer):
        def run(latents):
            quant, _, loss = peer(latents)
            return quant, loss

        return run

    timings = {
        "matmul": time_median(bare_matmul, device, args.repeats, warmup=args.warmup),
        "matmul_min": time_median(bare_matmul_min, device, args.repeats, warmup=args.warmup),
        "vq": time_median(forward_backward(vq, run_vq, z, upstream), device, args.repeats, warmup=args.warmup),
        "peer_default": time_median(
            forward_backward(peer_default, peer_runner(peer_default), z, upstream),
            device,
            args.repeats,
            warmup=args.warmup,
        ),
        "peer_st": time_median(
            forward_backward(peer_st, peer_runner(peer_st), z, upstream), device, args.repeats, warmup=args.warmup
        ),
    }
    ratios = {
        "vq/matmul": timings["vq"] / timings["matmul"],
        "vq/matmul_min": timings["vq"] / timings["matmul_min"],
        "peer_default/vq": timings["peer_default"] / timings["vq"],
        "peer_st/vq": timings["peer_st"] / timings["vq"],
    }

    print(
        f"device {device}, threads {torch.get_num_threads()}, z {tuple(shape)}, K {args.codebook_size}, "
        f"{args.repeats} repeats (median) after {args.warmup} warm-up"
    )
    print(f"{'case':<14}{'ms':>10}  what")
    described = {
        "matmul": "addmm + argmin on flat latents (forward only)",
        "matmul_min": "addmm + min(1).indices on flat latents (forward only)",
        "vq": "lgvq vq, forward + backward",
        "peer_default": "VectorQuantize defaults, forward + backward",
        "peer_st": "VectorQuantize straight-through learnable codebook, forward + backward",
    }
    for name, seconds in timings.items():
        print(f"{name:<14}{seconds * 1e3:>10.3f}  {described[name]}")
    for name, value in ratios.items():
        print(f"{name:<16}{value:>8.2f}x")
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "shape": list(shape),
                "codebook_size": args.codebook_size,
                "repeats": args.repeats,
                "ms": {name: round(seconds * 1e3, 4) for name, seconds in timings.items()},
                "ratios": {name: round(value, 3) for name, value in ratios.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
