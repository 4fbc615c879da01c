"""``lgvq sample``: images from a trained downstream model, written with their record."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgvq_core.errors import ConfigError
from lgvq_core.runner.downstream import needs_text
from lgvq_core.runner.downstream_run import load_downstream_run
from lgvq_core.runner.generate import check_generative, iter_generated, sample_record, write_samples


def sample_from_cli(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError([f"--out: {out_dir} is a file; give a folder (it is created when missing)"])
    run = load_downstream_run(args.run_dir, args.checkpoint, args.device)
    if args.caption and not needs_text(run):
        raise ConfigError(
            [f"--caption: this {run.config.downstream.type} model is not conditioned on text; leave --caption out"]
        )
    options = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "guidance_scale": args.guidance_scale,
        "steps": args.steps,
        "truncation": args.truncation,
    }
    given = {k: v for k, v in options.items() if v is not None}
    effective = check_generative(run.model, given)  # before any work
    if out_dir is None:
        out_dir = Path(args.run_dir) / "generated" / f"step-{run.step:07d}-seed-{args.seed}"
    record = sample_record(run, args.n, args.seed, effective, args.caption, args.batch_size)
    batches = iter_generated(
        run, args.n, args.seed, given, args.batch_size, captions=args.caption, with_conditions=True
    )
    written = write_samples(batches, args.n, out_dir, record)
    print(f"wrote {written} images and grid.png to {out_dir}")
    return 0
