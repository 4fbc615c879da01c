"""Levers against codebook collapse and slow starts, one at a time, on the same budget.

Trains a small-scale run file (default: ``examples/small/tokenizer.toml`` without its alignment
losses) once per variant with ``lgvq run``, every variant for the same number of steps on the same
data and seed, and reads the final validation PSNR, codebook usage and perplexity from each run's
``metrics.jsonl``. The variants are the plain tokenizer (``vq``, uniform codebook initialisation,
constant learning rate, taming's Adam betas, fp32), that plain tokenizer with one lever added, and
the full recipe (the run file as given). Each row also records its wall-clock and CPU time (user +
system of the run's process: the machine's load changes the first, hardly the second).

    python bench/recipe_levers.py --out bench/results/levers [--steps 3000] [--threads 2]
    python bench/recipe_levers.py --out /tmp/levers --steps 20 --variants plain,recipe   # a smoke test

Writes ``levers.md`` (the table, command, CPU, time) and ``levers.json`` to ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from lgvq_core.runner.rundir import cpu_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_FILE = ROOT / "examples" / "small" / "tokenizer.toml"

#: Overrides that undo the recipe's levers: the tokenizer as the official defaults would train it.
PLAIN = [
    "alignment=[]",
    'model.quantizer={type="vq", codebook_size=256, dim=64}',
    "train.warmup_steps=0",
    "train.lr_schedule=constant",
    "train.betas=[0.5, 0.9]",
    "run.precision=fp32",
]

#: Variant name -> (what it changes, overrides applied after PLAIN). "recipe" is the run file as given.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "plain": ("vq, uniform init, constant lr, betas (0.5, 0.9), fp32", []),
    "kmeans": ("+ k-means codebook initialisation", ["model.quantizer.init=kmeans"]),
    "restarts": ("+ dead-code restarts (threshold 1)", ["model.quantizer.dead_code_threshold=1.0"]),
    "factorised": (
        "+ factorised l2-normalised lookup (cosine, d 8)",
        ['model.quantizer={type="cosine", codebook_size=256, dim=64, lookup_dim=8}'],
    ),
    "ema": ("+ EMA codebook updates (vq-ema)", ['model.quantizer={type="vq-ema", codebook_size=256, dim=64}']),
    "warmup-cosine": ("+ lr warm-up 100 steps, cosine decay", ["train.warmup_steps=100", "train.lr_schedule=cosine"]),
    "betas": ("+ Adam betas (0.9, 0.99)", ["train.betas=[0.9, 0.99]"]),
    "batch-64": ("+ batch 64 (twice the images)", ["train.batch_size=64"]),
    "bf16": ("+ bf16 autocast", ["run.precision=bf16"]),
    "recipe": ("the recipe: the run file as given, without LG", ["alignment=[]"]),
    "recipe+lg": ("the recipe with its LG losses", []),
}


def last_validation(run_dir: Path) -> dict:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [line for line in lines if line.get("split") == "val"]
    if not val:
        raise RuntimeError(f"{run_dir}: no validation line in metrics.jsonl")
    return val[-1]


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    out = Path(args.out) / "runs"
    settings = [
        f"run.name={name.replace('+', '-with-')}",  # a run name is letters, digits, '.', '_' and '-'
        f"run.output_dir={out}",
        f"train.max_steps={args.steps}",
        f"train.val_every={args.steps}",
        f"train.checkpoint_every={args.steps}",
        f"train.sample_every={args.steps}",
        "run.progress=log",
        "tasks=[]",
        *overrides,
    ]
    command = [sys.executable, "-m", "lgvq_core.cli", "run", str(args.run_file)]
    for setting in settings:
        command += ["--set", setting]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    log = Path(args.out) / f"{name}.log"
    with log.open("w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run_dir = sorted((out / name.replace("+", "-with-")).iterdir())[-1]
    val = last_validation(run_dir)
    return {
        "variant": name,
        "lever": VARIANTS[name][0],
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "psnr": val.get("psnr"),
        "usage": val.get("codebook_usage"),
        "perplexity": val.get("perplexity"),
        "run_dir": str(run_dir),
    }


def table(rows: list[dict], steps: int) -> str:
    lines = [
        f"| lever ({steps:,} steps each) | val PSNR (dB) | codebook usage | perplexity | wall time | CPU time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['lever']} | {row['psnr']:.2f} | {row['usage']:.3f} | "
            f"{row['perplexity']:.1f} | {row['seconds']:.0f} s | {row['cpu_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-file", default=str(DEFAULT_RUN_FILE))
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names: " + ", ".join(VARIANTS))
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows of OUT/levers.json measured with the same run file, steps and threads (an interrupted "
        "run goes on where it stopped); without it every variant is measured again",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    setting = {"cpu": cpu_model(), "threads": args.threads, "steps": args.steps, "run_file": args.run_file}
    kept: dict[str, dict] = {}
    previous = Path(args.out) / "levers.json"
    if args.keep and previous.is_file():
        earlier = json.loads(previous.read_text())
        if all(earlier.get(key) == value for key, value in setting.items()):
            kept = {row["variant"]: row for row in earlier["rows"]}
    rows = []
    for name in names:
        if name in kept:
            rows.append(kept[name])
            print(f"{name}: kept from {previous}", flush=True)
            continue
        overrides = VARIANTS[name][1] if name.startswith("recipe") else PLAIN + VARIANTS[name][1]
        rows.append(run_variant(name, overrides, args))
        # written after every variant: an interrupted run keeps what it measured (--keep goes on from there)
        previous.write_text(json.dumps({**setting, "rows": rows}, indent=2) + "\n")
        print(
            f"{name}: PSNR {rows[-1]['psnr']:.2f}, usage {rows[-1]['usage']:.3f}, {rows[-1]['seconds']:.0f} s "
            f"wall, {rows[-1]['cpu_seconds']:.0f} s CPU",
            flush=True,
        )
    text = table(rows, args.steps)
    command = "python bench/recipe_levers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = f"CPU: {cpu_model()}, {args.threads} thread(s); started {started}; `{command}`"
    (Path(args.out) / "levers.md").write_text(header + "\n\n" + text + "\n")
    previous.write_text(json.dumps({**setting, "rows": rows}, indent=2) + "\n")
    print(header)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
