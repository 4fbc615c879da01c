"""``lgvq compare``: a run file is planned, trained and tabled (:mod:`compare_seeds`); evaluated run
directories are tabled as they are (:mod:`compare`)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

from lgvq_core.errors import RunDirError
from lgvq_core.runner.compare import compare_runs
from lgvq_core.runner.compare_seeds import run_comparison


def compare_from_cli(args: Any) -> int:
    """``lgvq compare FILE`` trains every arm for every seed; ``lgvq compare DIR DIR...`` tables runs."""
    sources = [Path(s) for s in args.sources]
    if len(sources) == 1 and sources[0].is_file():
        if args.labels:
            raise RunDirError("--labels applies to run directories; a run file names its arms in [[compare.arms]]")
        markdown, _, out = run_comparison(
            sources[0],
            overrides=list(args.set or []),
            seed_count=args.seeds,
            out=args.out,
            jobs=args.jobs,
            resume=args.resume,
        )
    else:
        for option, given in (("--set", args.set), ("--seeds", args.seeds), ("--resume", args.resume)):
            if given:
                raise RunDirError(f"{option} applies to a run file; with run directories there is nothing to train")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path(f"comparison-{stamp}-{int(time.time() * 1000) % 1000:03d}")
        markdown, _ = compare_runs(sources, args.labels, out)
    print(markdown)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")
    return 0
