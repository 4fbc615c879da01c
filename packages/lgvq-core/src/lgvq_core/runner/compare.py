"""Side-by-side comparison of evaluated runs (e.g. a baseline and its LG-VQ twin).

:func:`compare_runs` reads each run's ``eval/<task>.json`` (written by ``lgvq eval`` or by the end
of ``lgvq run``), its ``resolved.toml`` and its ``metrics.jsonl``, and writes ``compare.md`` (one
column per run, the better value of each row in bold) and ``compare.json`` (the same numbers and
every run's full results).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli

from lgvq_core.errors import RunDirError


@dataclass(frozen=True)
class Row:
    """One line of the table: where its value lives in a run's results and which way is better."""

    metric: str
    task: str
    key: tuple[str, ...]
    better: str | None = None  # "higher", "lower" or None (not ranked)


#: The table, in reading order. Rows no run has are left out.
ROWS: tuple[Row, ...] = (
    Row("training steps", "run", ("step",)),
    Row("alignment losses", "run", ("alignment",)),
    Row("val rec_loss (last)", "run", ("val_rec_loss",), "lower"),
    Row("PSNR", "reconstruction", ("psnr",), "higher"),
    Row("SSIM", "reconstruction", ("ssim",), "higher"),
    Row("rFID", "reconstruction", ("fid",), "lower"),
    Row("LPIPS", "reconstruction", ("lpips",), "lower"),
    Row("codebook usage", "reconstruction", ("usage",), "higher"),
    Row("perplexity", "reconstruction", ("perplexity",), "higher"),
    Row("retrieval R@1", "retrieval", ("r@1",), "higher"),
    Row("retrieval R@5", "retrieval", ("r@5",), "higher"),
    Row("retrieval R@1 by chance", "retrieval", ("chance_r@1",)),
    Row("retrieval head", "retrieval", ("matcher",)),
    Row("masked words Mask-1 R@1, leak-free", "masked-words", ("leak-free", "mask-1", "recall@1"), "higher"),
    Row("masked words Mask-3 R@1, leak-free", "masked-words", ("leak-free", "mask-3", "recall@1"), "higher"),
    Row(
        "masked words Mask-1 R@1, leak-free, images shuffled",
        "masked-words",
        ("leak-free", "mask-1", "shuffled_recall@1"),
    ),
    Row("masked words Mask-1 R@1, official (leaky)", "masked-words", ("official", "mask-1", "recall@1"), "higher"),
    Row("masked words Mask-3 R@1, official (leaky)", "masked-words", ("official", "mask-3", "recall@1"), "higher"),
    Row(
        "masked words Mask-1 R@1, official, images shuffled",
        "masked-words",
        ("official", "mask-1", "shuffled_recall@1"),
    ),
    Row("masked-text head", "masked-words", ("matcher",)),
    Row("relation MSE", "relation", ("mse",), "lower"),
    Row("relation matcher", "relation", ("matcher",)),
    Row("codes never used", "codebook", ("dead_codes",), "lower"),
)


def _lookup(results: dict[str, Any], key: tuple[str, ...]) -> Any:
    node: Any = results
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _run_info(run_dir: Path) -> dict[str, Any]:
    """What the table needs from one run directory besides its eval results."""
    from lgvq_core.runner.evaluate import read_results
    from lgvq_core.runner.rundir import read_metrics

    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    resolved = run_dir / "resolved.toml"
    if not resolved.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no resolved.toml)")
    results = read_results(run_dir)
    if not results:
        raise RunDirError(f"{run_dir}: no eval/<task>.json results; run `lgvq eval {run_dir}` first")
    config = tomli.loads(resolved.read_text(encoding="utf-8"))
    records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    val = [r for r in records if r.get("split") == "val"]
    steps = [r["step"] for r in records if "step" in r]
    return {
        "name": config.get("run", {}).get("name", run_dir.parent.name),
        "run_dir": str(run_dir),
        "run": {
            "step": max(steps) if steps else None,
            "alignment": [a.get("type", "?") for a in config.get("alignment", [])],
            "val_rec_loss": val[-1].get("rec_loss") if val else None,
        },
        "val": val[-1] if val else {},
        "eval": results,
    }


def _labels(infos: list[dict[str, Any]], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(infos):
            raise ValueError(f"got {len(labels)} label(s) for {len(infos)} run(s)")
        return list(labels)
    names = [info["name"] for info in infos]
    return [
        f"{name} ({Path(info['run_dir']).name})" if names.count(name) > 1 else name
        for name, info in zip(names, infos, strict=True)
    ]


def _best(values: list[Any], better: str | None) -> set[int]:
    # compared as shown (4 significant digits): no bold for a difference the table does not show
    numbers = [(i, float(f"{v:.4g}")) for i, v in enumerate(values) if _is_number(v)]
    if better is None or len(numbers) < 2:
        return set()
    pick = max if better == "higher" else min
    target = pick(v for _, v in numbers)
    if all(v == target for _, v in numbers):
        return set()
    return {i for i, v in numbers if v == target}


def compare_runs(
    run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None, out_dir: str | Path | None = None
) -> tuple[str, dict[str, Any]]:
    """Compare evaluated runs; return the markdown table and its data, and write both to ``out_dir``.

    ``labels`` name the columns (default: each run's ``run.name``, with its directory when two runs
    share a name). With ``out_dir``, ``compare.md`` and ``compare.json`` are written there.
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    infos = [_run_info(Path(d)) for d in run_dirs]
    columns = _labels(infos, labels)
    rows = []
    for row in ROWS:
        if row.task == "run":
            values = [_lookup(info["run"], row.key) for info in infos]
        else:
            values = [_lookup(info["eval"].get(row.task, {}), row.key) for info in infos]
        if all(v is None for v in values):
            continue
        rows.append(
            {"metric": row.metric, "task": row.task, "key": list(row.key), "better": row.better, "values": values}
        )

    lines = [
        "| metric | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        best = _best(row["values"], row["better"])
        arrow = {"higher": " ↑", "lower": " ↓"}.get(row["better"], "")
        cells = [f"**{_format(v)}**" if i in best else _format(v) for i, v in enumerate(row["values"])]
        lines.append(f"| {row['metric']}{arrow} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"

    data = {
        "columns": columns,
        "rows": rows,
        "runs": [{"label": label, **info} for label, info in zip(columns, infos, strict=True)],
    }
    if out_dir is not None:
        from lgvq_core.atomic import write_json_atomic, write_text_atomic

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "compare.md", markdown)
        write_json_atomic(out / "compare.json", data)
    return markdown, data


def compare_from_cli(args: Any) -> int:
    """``lgvq compare FILE`` trains and evaluates both variants; ``lgvq compare DIR DIR...`` tables them."""
    import datetime
    import time

    sources = [Path(s) for s in args.sources]
    if len(sources) == 1 and sources[0].is_file():
        run_dirs, labels, out = _train_both(sources[0], list(args.set or []))
        labels = args.labels or labels
        out = Path(args.out) if args.out else out
    else:
        if args.set:
            raise RunDirError("--set applies to a run file; with run directories there is nothing to override")
        run_dirs, labels = sources, args.labels
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path(f"comparison-{stamp}-{int(time.time() * 1000) % 1000:03d}")
    markdown, _ = compare_runs(run_dirs, labels, out)
    print(markdown)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")
    return 0


def _train_both(path: Path, overrides: list[str]) -> tuple[list[Path], list[str], Path]:
    """Train ``path`` as given and without its alignment losses, same seed; evaluate both."""
    import time

    from lgvq_core.registry import load_run_file
    from lgvq_core.runner.loop import describe_result, train

    loaded = load_run_file(path, overrides=overrides)
    config = loaded.config
    if not config.alignment:
        raise RunDirError(f"{path}: has no [[alignment]] losses, so there is no LG-VQ variant to compare")
    if not config.tasks:
        raise RunDirError(f"{path}: has no [[tasks]]; add the evaluation tasks the table should show")
    text = path.read_text(encoding="utf-8")
    name = config.run.name
    variants = [
        ("LG-VQ", [*overrides, f"run.name={name}"]),
        ("baseline", [*overrides, "alignment=[]", f"run.name={name}-baseline"]),
    ]
    run_dirs = []
    for label, variant in variants:
        started = time.perf_counter()
        print(f"== {label}: lgvq run {path} {' '.join('--set ' + o for o in variant)}", flush=True)
        result = train(load_run_file(path, overrides=variant), source_text=text, overrides=variant)
        print(describe_result(result), flush=True)
        print(f"== {label}: {time.perf_counter() - started:.0f} s including evaluation", flush=True)
        run_dirs.append(result.run_dir)
    out = Path(config.run.output_dir) / f"{name}-comparison" / run_dirs[0].name
    return run_dirs, [label for label, _ in variants], out
