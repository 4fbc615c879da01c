"""What every benchmark here shares: device, seed, repeats and thread count, set up the same way."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timer stops after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(step: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``step`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
