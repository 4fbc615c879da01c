"""What every benchmark here shares: device, seed, repeats and thread count, set up the same way."""

from __future__ import annotations

import argparse

import torch


def add_common_options(parser: argparse.ArgumentParser, repeats: int | None = 3, device: str | None = None) -> None:
    """``--device``, ``--seed``, ``--threads`` and (when ``repeats`` is given) ``--repeats``."""
    default = device or ("cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--device", default=default)
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help="timed repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def prepare(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and ``--seed``; return the ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return torch.device(args.device)
