"""The GPU rung: ``lgvq compare examples/gpu/compare.toml`` on one GPU, as the device suite runs it.

The comparison of ``examples/compare.toml`` (baseline and LG at x1, x10 and x100 of the official
weights, the same tasks and downstream models) one size up: 64 px shapes, 16x16 codes, K 512.
Several runs share the GPU (``--jobs``); ``--seeds`` trains the first N seeds of ``[compare]``
(the suite's time budget holds two). With ``--tiny`` every run file is shrunk to a few steps on
a few 32 px images, so the whole rung can be tried on a CPU in a minute or two (the test suite
does).

    python bench/gpu_compare.py --out OUT [--seeds 2] [--jobs 3]
    python bench/gpu_compare.py --out /tmp/rung --device cpu --tiny --seeds 1

Writes the comparison folder ``OUT/comparison`` (compare.md, compare.json, every run) and prints
one JSON line: the table's file, the seconds taken and the rows of the arms' mean values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import tomli

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "examples" / "gpu"

#: --tiny: a few steps on a few images, every table that sets a length or a size.
TINY_TOKENIZER = {
    "data": {"image_size": 32, "num_train": 24, "num_val": 8},
    "model": {"quantizer": {"codebook_size": 16}},
    "train": {
        "batch_size": 4,
        "max_steps": 2,
        "warmup_steps": 0,
        "val_every": 2,
        "checkpoint_every": 2,
        "sample_every": 2,
        "val_batches": 1,
    },
}
TINY_DOWNSTREAM = {"train": {"batch_size": 4, "max_steps": 2, "warmup_steps": 0, "val_every": 2, "checkpoint_every": 2}}
TINY_TASKS = {
    "code-probe": {"train_images": 16, "steps": 3},
    "retrieval": {"probe": {"steps": 2, "batch_size": 4}},
    "masked-words": {"probe": {"steps": 2, "batch_size": 4, "text_input": "token-embedding"}},
    "relation": {"probe": {"steps": 2, "batch_size": 4}},
    "generation-fid": {"samples": 4, "batch_size": 4, "save_images": 4, "probe_train_images": 16},
}


def merge(table: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``table`` with ``changes`` written into it, nested tables merged key by key."""
    merged = dict(table)
    for key, value in changes.items():
        merged[key] = merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def tiny_preset(out: Path, device: str) -> Path:
    """The preset's run files shrunk to a smoke run on ``device``, written to ``out``; the compare file's path."""
    from lgvq_core.config.describe import dumps_toml

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(PRESET.glob("*.toml")):
        table = tomli.loads(path.read_text(encoding="utf-8"))
        table = merge(table, TINY_DOWNSTREAM if "downstream" in table else TINY_TOKENIZER)
        table["run"] = {**table.get("run", {}), "device": device, "progress": "off"}
        table["tasks"] = [merge(task, TINY_TASKS.get(task["type"], {})) for task in table.get("tasks", [])]
        if "downstream" not in table:
            table["tasks"] = [t for t in table["tasks"] if t["type"] != "codebook"]  # 16 codes: nothing to see
        (out / path.name).write_text(dumps_toml(table), encoding="utf-8")
    return out / "compare.toml"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seeds", type=int, default=2, help="train the first N seeds of [compare] (default 2)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at a time (they share the device)")
    parser.add_argument("--tiny", action="store_true", help="shrink every run file to a smoke run")
    args = parser.parse_args(argv)
    from lgvq_core.runner.compare_seeds import run_comparison

    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        file = tiny_preset(args.out / "run-files", args.device)
        overrides: list[str] = []
    else:
        file = PRESET / "compare.toml"
        overrides = [f"run.device={args.device}"]
    started = time.perf_counter()
    markdown, data, folder = run_comparison(
        file, overrides=overrides, seed_count=args.seeds, out=args.out / "comparison", jobs=args.jobs
    )
    print(markdown, flush=True)
    means = {row["metric"]: row["mean"] for row in data["rows"] if row.get("numeric") and row.get("mean") is not None}
    result = {
        "table": str(folder / "compare.md"),
        "seconds": round(time.perf_counter() - started, 1),
        "seeds": data["seeds"],
        "arms": data["arms"],
        "means": means,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
