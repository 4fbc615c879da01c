"""The comparison table: arms side by side, each cell the mean ± spread over seeds.

An *arm* is one variant (e.g. LG-VQ and its baseline); each arm has one evaluated run directory
per seed. :func:`compare_arms` reads every run's ``eval/<task>.json``, ``resolved.toml`` and
``metrics.jsonl`` and writes ``compare.md`` and ``compare.json`` (per-seed values, means, standard
deviations and paired differences). A value is bold only when its arm wins against every other
arm by a seed-paired difference whose 95 % t-interval excludes 0 (:mod:`compare_stats`); otherwise
the row says "within noise". ``lgvq compare FILE`` trains the runs first (:mod:`compare_seeds`);
:mod:`compare_cli` is the command, which uses both (neither imports the other's caller).

Which rows appear, and which way is better:

- :data:`RUN_ROWS` (steps, alignment losses, the last validation loss) come first; then the rows
  each task declares in its spec (:class:`lgvq_core.specs.TaskSpec` ``comparison_rows``, in
  ``comparison_order``), each with ``better`` = "higher", "lower" or None (shown, never ranked).
  That is where the table's ↑ and ↓ come from.
- A task that declares no rows (a downstream or language task, a third-party task) gets one
  row per number in its results, labelled ``<task>: <key.path>``. It says which way is better by
  returning a ``better`` table among its metrics, keyed like its rows:
  ``{"fid": 12.3, "better": {"fid": "lower"}}``; numbers it does not name are shown unranked.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli

from lgvq_core.atomic import write_json_atomic, write_text_atomic
from lgvq_core.errors import LgvqError, RunDirError
from lgvq_core.registry import get_registry
from lgvq_core.runner.compare_stats import CONFIDENCE, paired_difference, spread, t_quantile
from lgvq_core.runner.plot import compare_figures


@dataclass(frozen=True)
class Row:
    """One line of the table: where its value lives in a run's results and which way is better."""

    metric: str
    task: str
    key: tuple[str, ...]
    better: str | None = None  # "higher", "lower" or None (not ranked)


#: The rows of every run, first in the table. Rows no run has are left out.
RUN_ROWS: tuple[Row, ...] = (
    Row("training steps", "run", ("step",)),
    Row("alignment losses", "run", ("alignment",)),
    Row("val rec_loss (last)", "run", ("val_rec_loss",), "lower"),
)


def curated_rows() -> tuple[Row, ...]:
    """:data:`RUN_ROWS`, then the rows each registered task declares (its spec's ``comparison_rows``)."""

    entries = [e for e in get_registry().entries("task") if getattr(e.spec, "comparison_rows", ())]
    entries.sort(key=lambda entry: (getattr(entry.spec, "comparison_order", 100), entry.name))
    rows = list(RUN_ROWS)
    for entry in entries:
        rows += [Row(row.label, entry.name, tuple(row.key), row.better) for row in entry.spec.comparison_rows]
    return tuple(rows)


#: The metrics key in which a task names the direction of its numbers (see the module docstring).
BETTER_KEY = "better"


# ------------------------------------------------------------------------------------------
# reading runs
# ------------------------------------------------------------------------------------------
def read_metric_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a last line cut by a crash or a kill is dropped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                break  # written when the run stopped mid-line: every complete line before it counts
            raise RunDirError(
                f"{path}: line {number} is not JSON ({line[:60]!r}); only a cut last line is expected "
                "after a crash: repair or delete the line"
            ) from None
    return records


def tokenizer_alignment(tokenizer_dir: Path) -> list[str]:
    """The alignment losses a downstream run's tokenizer was trained with (``["?"]`` when unreadable)."""
    try:
        config = tomli.loads((tokenizer_dir / "resolved.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError):
        return ["? (tokenizer run unreadable)"]
    return [a.get("type", "?") for a in config.get("alignment", []) if isinstance(a, dict)]


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """What the table needs from one evaluated run directory."""
    from lgvq_core.runner.evaluate import read_results  # lazy: imports torch; tabling finished runs does not need it

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    resolved = run_dir / "resolved.toml"
    if not resolved.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no resolved.toml)")
    results = read_results(run_dir)
    if not results:
        raise RunDirError(f"{run_dir}: no eval/<task>.json results; run `lgvq eval {run_dir}` first")
    try:
        config = tomli.loads(resolved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError) as exc:
        raise RunDirError(f"{resolved}: cannot be read ({exc}); it is not the run file `lgvq run` wrote") from None
    alignment = [a.get("type", "?") for a in config.get("alignment", []) if isinstance(a, dict)]
    tokenizer = config.get("tokenizer")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("run_dir"), str):
        alignment = tokenizer_alignment(Path(tokenizer["run_dir"]))  # a downstream run: its tokenizer's losses
    metrics_file = run_dir / "metrics.jsonl"
    records = read_metric_lines(metrics_file) if metrics_file.is_file() else []
    val = [r for r in records if r.get("split") == "val"]
    steps = [r["step"] for r in records if "step" in r]
    return {
        "name": config.get("run", {}).get("name", run_dir.parent.name),
        "seed": int(config.get("run", {}).get("seed", 0)),
        "run_dir": str(run_dir),
        "run": {
            "step": max(steps) if steps else None,
            "alignment": alignment,
            "val_rec_loss": val[-1].get("rec_loss") if val else None,
        },
        "val": val[-1] if val else {},
        "eval": results,
    }


# ------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------
def _lookup(results: Any, key: Sequence[str]) -> Any:
    node = results
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numeric_leaves(metrics: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(metrics, dict):
        keys = []
        for name, value in metrics.items():
            if not prefix and name == BETTER_KEY:
                continue
            keys += _numeric_leaves(value, (*prefix, str(name)))
        return keys
    return [prefix] if _is_number(metrics) else []


def table_rows(infos: Sequence[Mapping[str, Any]]) -> list[Row]:
    """The curated rows (:func:`curated_rows`) the runs have, then one row per number of every other task."""
    curated = curated_rows()
    curated_tasks = {row.task for row in curated}
    rows = [row for row in curated if any(_value(info, row) is not None for info in infos)]
    extra: dict[tuple[str, tuple[str, ...]], str | None] = {}
    for info in infos:
        for task, metrics in info["eval"].items():
            if task in curated_tasks or not isinstance(metrics, dict):
                continue
            directions = metrics.get(BETTER_KEY) if isinstance(metrics.get(BETTER_KEY), dict) else {}
            for key in _numeric_leaves(metrics):
                direction = directions.get(".".join(key))
                if direction not in ("higher", "lower"):
                    direction = None
                if extra.get((task, key)) is None:
                    extra[(task, key)] = direction
    rows += [Row(f"{task}: {'.'.join(key)}", task, key, better) for (task, key), better in extra.items()]
    return rows


def _value(info: Mapping[str, Any], row: Row) -> Any:
    if row.task == "run":
        return _lookup(info["run"], row.key)
    return _lookup(info["eval"].get(row.task, {}), row.key)


# ------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------
def _winner(per_arm: dict[str, list[float | None]], means: dict[str, float], better: str | None) -> str | None:
    """The arm with the best mean, if it beats every other arm beyond the seed-to-seed noise."""
    if better is None or len(means) < 2:
        return None
    sign = 1 if better == "higher" else -1
    best = max(means, key=lambda label: sign * means[label])
    for other in means:
        if other == best:
            continue
        pairs = [(a, b) for a, b in zip(per_arm[best], per_arm[other], strict=True) if a is not None and b is not None]
        if len(pairs) < 2:
            return None
        difference = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        if not difference.holds or sign * difference.mean <= 0:
            return None
    return best


def _pairs(labels: list[str], reference: str | None) -> list[tuple[str, str]]:
    """(a, b) of every difference a − b: ``labels[0]`` − each other arm, or each arm − ``reference``."""
    if reference is None:
        return [(labels[0], other) for other in labels[1:]]
    return [(label, reference) for label in labels if label != reference]


def _aggregate_row(
    row: Row, labels: list[str], values: dict[str, list[Any]], reference: str | None = None
) -> dict[str, Any]:
    present = [v for label in labels for v in values[label] if v is not None]
    entry: dict[str, Any] = {
        "metric": row.metric,
        "task": row.task,
        "key": list(row.key),
        "better": row.better,
        "values": values,
    }
    if not present or not all(_is_number(v) for v in present):
        entry["numeric"] = False
        return entry
    entry["numeric"] = True
    means, stds = {}, {}
    for label in labels:
        numbers = [v for v in values[label] if v is not None]
        if numbers:
            summary = spread(numbers)
            means[label], stds[label] = summary.mean, summary.std
    entry["mean"], entry["std"] = means, stds
    differences = []
    for first, second in _pairs(labels, reference):
        pairs = [(a, b) for a, b in zip(values[first], values[second], strict=True) if a is not None and b is not None]
        if not pairs:
            differences.append({"a": first, "b": second, "n": 0, "verdict": "no common seed"})
            continue
        difference = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        differences.append(
            {
                "a": first,
                "b": second,
                "mean": difference.mean,
                "low": difference.low,
                "high": difference.high,
                "n": difference.count,
                "verdict": difference.verdict,
            }
        )
    entry["differences"] = differences
    entry["winner"] = _winner(values, means, row.better)
    return entry


def aggregate(arms: Mapping[str, Mapping[int, Mapping[str, Any]]], reference: str | None = None) -> dict[str, Any]:
    """``{arm label: {seed: run info}}`` -> the comparison's data (rows, per-seed values, the rule).

    Differences are ``first arm − each other arm``, or with ``reference`` ``each arm − reference``.
    """
    if not arms:
        raise ValueError("a comparison needs at least one arm")
    labels = list(arms)
    if reference is not None and reference not in labels:
        raise ValueError(f"reference arm {reference!r} is not among the arms {labels}")
    seeds = sorted({seed for runs in arms.values() for seed in runs})
    infos = [info for runs in arms.values() for info in runs.values()]
    rows = []
    for row in table_rows(infos):
        values = {
            label: [_value(arms[label][seed], row) if seed in arms[label] else None for seed in seeds]
            for label in labels
        }
        rows.append(_aggregate_row(row, labels, values, reference))
    return {
        "arms": labels,
        "reference": reference,
        "seeds": seeds,
        "rule": rule_text(labels, seeds, reference),
        "rows": rows,
        "runs": [{"arm": label, **info} for label in labels for info in arms[label].values()],
    }


def rule_text(labels: Sequence[str], seeds: Sequence[int], reference: str | None = None) -> str:
    """The sentence under the table that says how to read it."""
    seed_list = ", ".join(str(s) for s in seeds)
    if len(seeds) < 2:
        return (
            f"One seed ({seed_list}): each cell is a single run, so no difference can be told from noise "
            "and nothing is bold. Train more seeds (`--seeds 3`) to compare."
        )
    t = t_quantile(len(seeds) - 1)
    if reference is not None:
        versus = (
            f"{_pairs(list(labels), reference)[0][0]} − {reference}" if len(labels) == 2 else f"each arm − {reference}"
        )
    else:
        versus = f"{labels[0]} − {labels[1]}" if len(labels) == 2 else f"{labels[0]} − each other arm"
    return (
        f"Seeds {seed_list} (n = {len(seeds)}); each cell is the mean ± standard deviation over the seeds "
        "(one value when every seed gave the same). "
        + ("The last column is" if len(labels) == 2 else "The last columns are")
        + f" the seed-paired difference {versus} with its {CONFIDENCE:.0%} t-interval (mean ± {t:.3g} × sd / √{len(seeds)}). "
        "↑/↓: higher/lower is better. A value is bold only when its arm beats every other arm by a "
        f"paired difference whose {CONFIDENCE:.0%} interval excludes 0; otherwise the difference is "
        '"within noise".'
    )


# ------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------
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


def _cell(entry: dict[str, Any], label: str) -> str:
    values = [v for v in entry["values"][label] if v is not None]
    if not values:
        return "n/a"
    if not entry["numeric"] or all(v == values[0] for v in values):
        shown: list[str] = []
        for value in values:
            if _format(value) not in shown:
                shown.append(_format(value))
        text = " / ".join(shown)
    else:
        mean, std = entry["mean"][label], entry["std"][label]
        text = _format(mean) if std is None else f"{mean:.4g} ± {std:.2g}"
    return f"**{text}**" if entry.get("winner") == label else text


def _difference_cell(difference: dict[str, Any]) -> str:
    if difference["n"] == 0:
        return "n/a"
    if difference["verdict"] == "equal":
        return "0 (equal)"
    text = f"{difference['mean']:+.3g}"
    if difference["low"] is None:
        return f"{text} (one seed)"
    text += f" [{difference['low']:+.3g}, {difference['high']:+.3g}]"
    return text + (", within noise" if difference["verdict"] == "within noise" else "")


def render_markdown(data: Mapping[str, Any]) -> str:
    """The table, the rule under it and any context lines (command, machine, time)."""
    labels = data["arms"]
    others = [f"{a} − {b}" for a, b in _pairs(list(labels), data.get("reference"))]
    header = ["metric", *labels, *others]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for entry in data["rows"]:
        arrow = {"higher": " ↑", "lower": " ↓"}.get(entry["better"], "")
        cells = [_cell(entry, label) for label in labels]
        if entry["numeric"]:
            cells += [_difference_cell(d) for d in entry["differences"]]
        else:
            cells += [""] * len(others)
        lines.append(f"| {entry['metric']}{arrow} | " + " | ".join(cells) + " |")
    lines += ["", data["rule"]]
    if data.get("context"):
        lines.append("")
        lines += [f"- {key}: {value}" for key, value in data["context"].items()]
    return "\n".join(lines) + "\n"


def compare_arms(
    arms: Mapping[str, Mapping[int, Mapping[str, Any]]],
    out_dir: str | Path | None = None,
    context: Mapping[str, str] | None = None,
    reference: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Aggregate ``{arm: {seed: run info}}`` (see :func:`run_info`); write ``compare.md``/``.json``."""
    data = aggregate(arms, reference)
    if context:
        data["context"] = dict(context)
    markdown = render_markdown(data)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "compare.md", markdown)
        write_json_atomic(out / "compare.json", data)
        try:
            figures = compare_figures(arms, out)
        except LgvqError as exc:  # matplotlib is an optional extra: the table stands without the figures
            print(f"note: no figures of the curves ({exc})", file=sys.stderr)
        else:
            if figures:
                print(
                    f"wrote {len(figures)} figure(s) of the curves (each seed and the mean per arm) to {out / 'figures'}"
                )
    return markdown, data


def compare_runs(
    run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None, out_dir: str | Path | None = None
) -> tuple[str, dict[str, Any]]:
    """Table evaluated run directories; runs with the same label are one arm's seeds.

    ``labels`` (default: each run's ``run.name``) name the arms; an arm's runs are paired with the
    other arms' runs by their ``run.seed``.
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    infos = [run_info(d) for d in run_dirs]
    if labels is None:
        labels = [info["name"] for info in infos]
    elif len(labels) != len(infos):
        raise ValueError(f"got {len(labels)} label(s) for {len(infos)} run(s)")
    arms: dict[str, dict[int, dict[str, Any]]] = {}
    for label, info in zip(labels, infos, strict=True):
        runs = arms.setdefault(label, {})
        if info["seed"] in runs:
            raise RunDirError(
                f"{info['run_dir']} and {runs[info['seed']]['run_dir']} are both arm {label!r} with seed "
                f"{info['seed']}; give --labels to tell the arms apart"
            )
        runs[info["seed"]] = info
    return compare_arms(arms, out_dir)
