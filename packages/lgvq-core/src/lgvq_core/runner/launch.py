"""``lgvq run`` from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lgvq_core.errors import ConfigError, RunDirError
from lgvq_core.registry import get_registry
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.checkpoint import resolve_checkpoint
from lgvq_core.runner.loop import describe_result, train


def run_from_cli(args: argparse.Namespace) -> int:

    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"run.device={args.device}")
    resume_dir = None
    source_text = ""
    if args.resume:
        resume_dir = Path(args.resume)
        resolved = resume_dir / "resolved.toml"
        if not resolved.exists():
            raise RunDirError(
                f"{resume_dir}: not a run directory (no resolved.toml); give the directory `lgvq run` printed"
            )
        resolve_checkpoint(resume_dir, "last", log=lambda _: None)  # fail before building anything
        loaded = load_run_file(args.file or resolved, overrides=overrides, of_run_dir=args.file is None)
        refuse_finished_run(resume_dir, loaded.config.train.max_steps)
    else:
        if not args.file:
            raise ConfigError(["$: give a run file (lgvq run FILE) or --resume RUN_DIR"])
        loaded = load_run_file(args.file, overrides=overrides)
        source_text = Path(args.file).read_text(encoding="utf-8")
    report_plugin_failures()
    result = train(loaded, source_text=source_text, overrides=overrides, resume_dir=resume_dir)
    if result.run_dir is not None and _is_main():
        print(describe_result(result), flush=True)
    return result.exit_code  # 128 + N after signal N (SIGTERM: 143), with checkpoints/last saved


def report_plugin_failures() -> None:
    """Say which plugins failed to load (they are also listed in the run's ``plugins.json``)."""
    if not _is_main():
        return

    for failure in get_registry().failures:
        print(
            f"warning: {failure.describe()}; its components are unavailable (see `lgvq plugins`)",
            file=sys.stderr,
            flush=True,
        )


def refuse_finished_run(run_dir: Path, max_steps: int) -> None:
    """Stop at once when ``last`` is already at ``max_steps``: resuming would load everything to take no
    step. The message says how to train further and how to evaluate again."""
    pointer = run_dir / "checkpoints" / "last.json"
    try:
        step = int(json.loads(pointer.read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # an older or damaged pointer: restore() reads the checkpoint itself and says what is wrong
    if step >= max_steps:
        raise RunDirError(
            f"{run_dir}: the run is already at train.max_steps = {max_steps} (checkpoints/last is at step "
            f"{step}); nothing to resume. To train further, raise it: lgvq run --resume {run_dir} --set "
            f"train.max_steps={max(2 * max_steps, step + 1)}. To evaluate again: lgvq eval {run_dir}"
        )


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
