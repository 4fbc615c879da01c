"""Regenerate the numbers the README and docs quote about the examples, from runs of the examples.

Each example is run as the docs say (``lgvq run`` in a subprocess), timed in wall-clock and CPU
time (user + system of the child processes: the machine's load changes the first, hardly the
second), and summarised into ``docs/results/examples/<name>.json``: the machine (``lscpu``'s CPU
model, cores, threads, the load average before and after), the lgvq commit, the command, the
times, the validation numbers at the end of training and every task's results. The quoted
sentences in the README and docs sit between markers::

    <!-- example-numbers:quickstart -->
    ...rendered from docs/results/examples/quickstart.json...
    <!-- /example-numbers -->

and are rewritten from the records (``--render`` alone rewrites them without running anything). A
record may feed several blocks: ``<!-- example-numbers:compare:table -->`` renders the part ``table``
of the record ``compare``.
``tests/integration/test_example_numbers.py`` fails when a marked block differs from what its
record renders, so a number in them cannot be edited by hand or outlive its run.

    python bench/example_numbers.py                 # run every example (about 20 min on 2 cores), then render
    python bench/example_numbers.py quickstart      # one example
    python bench/example_numbers.py --render        # only rewrite the marked blocks from the records
    python bench/example_numbers.py levers          # bench/recipe_levers.py as the README runs it (~35 min)
    python bench/example_numbers.py compare         # lgvq compare examples/compare.toml --jobs 2 (~90 min)
    python bench/example_numbers.py compare --from-comparison runs/compare-comparison
                                                    # record a comparison that already ran (same command)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lgvq_core.runner.rundir import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "results" / "examples"
#: Files whose marked blocks are rendered from the records.
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "downstream.md", ROOT / "docs" / "results" / "small-compare.md")
BLOCK = re.compile(
    r"(?P<open><!-- example-numbers:(?P<name>[\w-]+)(?::(?P<part>[\w-]+))? -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /example-numbers -->)",
    re.S,
)
#: Settings that decide where a comparison writes, not what it computes: a record may carry them.
PLACE_ONLY = ("run.output_dir=",)


# ------------------------------------------------------------------------------------------
# the machine and a timed command
# ------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model (as lscpu names it), cores, the threads a run gets, and the load average now."""
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset (torch picks the core count)"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    """The checkout's commit, ``+changes`` when the code or the examples differ from it (docs do not count)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages", "examples"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return out.stdout.strip() + ("+changes" if dirty.strip() else "")
    except OSError:
        return "unknown"


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, dict[str, float]]:
    """Run ``command``; its output (also echoed) and its wall and CPU seconds (user + system of the children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line)
    code = process.wait()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = "".join(lines)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit {code}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return output, {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def run_directory(output: str) -> Path:
    """The run directory ``lgvq run`` printed last."""
    found = re.findall(r"^run directory: (\S+)", output, re.M)
    if not found:
        raise SystemExit("the run printed no 'run directory:' line")
    return Path(found[-1])


def summarise_run(run_dir: Path) -> dict[str, Any]:
    """The end of a run: its steps, training speed, last validation numbers and task results."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    results = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        record = json.loads(path.read_text())
        results[record.get("task", path.stem)] = record.get("metrics", record)
    last = train[-1] if train else {}
    return {
        "run_dir": str(run_dir),
        "steps": last.get("step"),
        "training_s": last.get("elapsed_s"),
        "images_seen": last.get("images_seen"),
        "validation": {k: v for k, v in (val[-1] if val else {}).items() if k not in ("step", "split")},
        "results": results,
    }


# ------------------------------------------------------------------------------------------
# the examples
# ------------------------------------------------------------------------------------------
def lgvq(*args: str) -> list[str]:
    return [sys.executable, "-m", "lgvq_core.cli", *args]


def run_quickstart(overrides: list[str], records: Path = RECORDS) -> dict[str, Any]:
    command = lgvq("run", "examples/quickstart.toml", *[a for o in overrides for a in ("--set", o)])
    output, times = timed(command, ROOT)
    return {"commands": [" ".join(command[2:])], "times": times, "run": summarise_run(run_directory(output))}


def run_downstream(overrides: list[str], records: Path = RECORDS) -> dict[str, Any]:
    sets = [a for o in overrides for a in ("--set", o)]
    first = lgvq("run", "examples/downstream/tokenizer.toml", *sets)
    output, tokenizer_times = timed(first, ROOT)
    tokenizer_dir = run_directory(output)
    second = lgvq("run", "examples/downstream/code-gpt.toml", "--set", f"tokenizer.run_dir={tokenizer_dir}", *sets)
    output, prior_times = timed(second, ROOT)
    prior_dir = run_directory(output)
    return {
        "commands": [" ".join(first[2:]), " ".join(second[2:])],
        "times": {"tokenizer": tokenizer_times, "prior": prior_times},
        "run": {"tokenizer": summarise_run(tokenizer_dir), "prior": summarise_run(prior_dir)},
    }


def run_levers(overrides: list[str], records: Path = RECORDS) -> dict[str, Any]:
    """bench/recipe_levers.py as the README gives it: every variant, 3,000 steps, 2 threads. Rows that an
    interrupted run of the same command left in runs/bench-levers/levers.json are kept (``--keep``); delete
    that folder to measure every variant again. The times are the rows' own, summed."""
    if overrides:
        raise SystemExit("levers: --set does not apply (the bench sets every variant's options itself)")
    out = ROOT / "runs" / "bench-levers"
    command = [sys.executable, "bench/recipe_levers.py", "--out", str(out), "--steps", "3000", "--threads", "2"]
    timed([*command, "--keep"], ROOT)
    bench = json.loads((out / "levers.json").read_text(encoding="utf-8"))
    rows = bench["rows"]
    times = {
        "wall_s": round(sum(r["seconds"] for r in rows), 1),
        "cpu_s": round(sum(r["cpu_seconds"] for r in rows), 1),
    }
    shown = ["python", command[1], "--out", "DIR", *command[4:]]
    return {"commands": [" ".join(shown)], "times": times, "steps": bench["steps"], "rows": rows}


def _seconds(words: str) -> float:
    """``'95 min 3 s'`` or ``'42 s'`` (how ``lgvq compare`` writes a duration) in seconds."""
    found = re.fullmatch(r"\s*(?:(\d+) min )?(\d+) s\s*", words)
    if not found:
        raise ValueError(f"not a duration: {words!r}")
    return 60.0 * int(found.group(1) or 0) + int(found.group(2))


def comparison_record(folder: Path) -> dict[str, Any]:
    """What a finished ``lgvq compare`` left in ``folder``: its table (every row, without the per-run
    details), its command, machine and times (the command's wall-clock time; the runs' wall-clock and
    CPU time summed from ``compare-state.json``)."""
    table_path, state_path = folder / "compare.json", folder / "compare-state.json"
    for path in (table_path, state_path):
        if not path.is_file():
            raise SystemExit(
                f"{path} is missing: give the folder of a finished comparison (compare.json, compare-state.json)"
            )
    table = json.loads(table_path.read_text(encoding="utf-8"))
    runs = list(json.loads(state_path.read_text(encoding="utf-8"))["runs"].values())
    cpu = [run.get("cpu_seconds") for run in runs]
    if not all(isinstance(c, (int, float)) for c in cpu):
        raise SystemExit(f"{state_path}: CPU time is not recorded for every run (run the comparison again)")
    context = table.get("context", {})
    invocation = re.search(r"this invocation (.+)$", context.get("Time", ""))
    command = context.get("Command", "").strip("`")
    overrides = re.findall(r"--set (\S+)", command)
    return {
        "folder": str(folder),
        "commands": [command],
        "times": {
            "wall_s": _seconds(invocation.group(1)) if invocation else float("nan"),
            "cpu_s": round(sum(cpu), 1),
            "runs_wall_s": round(sum(float(run["seconds"]) for run in runs), 1),
            "runs": len(runs),
        },
        "place_overrides": [o for o in overrides if o.startswith(PLACE_ONLY)],
        "overrides": [o for o in overrides if not o.startswith(PLACE_ONLY)],
        "comparison": {
            "machine": context.get("Machine", ""),
            **{key: table[key] for key in ("arms", "reference", "seeds", "rule")},
            "rows": [{k: v for k, v in row.items() if k not in ("task", "key")} for row in table["rows"]],
        },
    }


def run_compare(overrides: list[str], records: Path = RECORDS) -> dict[str, Any]:
    """``lgvq compare examples/compare.toml --jobs 2``, then its record."""
    command = lgvq("compare", "examples/compare.toml", "--jobs", "2", *[a for o in overrides for a in ("--set", o)])
    output, times = timed(command, ROOT)
    found = re.findall(r"^wrote (\S+)/compare\.md and ", output, re.M)
    if not found:
        raise SystemExit("the comparison printed no 'wrote .../compare.md' line")
    record = comparison_record(Path(found[-1]))
    record["times"]["wall_s"] = times["wall_s"]
    return record


def comparison_run_dir(records: Path, arm: str = "baseline", seed: int = 0) -> Path:
    """The tokenizer run of ``arm`` and ``seed`` in the comparison that ``records/compare.json`` recorded."""
    path = records / "compare.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: record the comparison first (bench/example_numbers.py compare)")
    folder = Path(json.loads(path.read_text(encoding="utf-8"))["folder"])
    runs = json.loads((folder / "compare-state.json").read_text(encoding="utf-8"))["runs"]
    entry = runs.get(f"{arm}/seed-{seed}")
    if entry is None or not Path(entry["run_dir"]).is_dir():
        raise SystemExit(f"{folder}: no finished run of {arm}, seed {seed} (is this the comparison's folder?)")
    return Path(entry["run_dir"])


def run_grounding(overrides: list[str], records: Path = RECORDS) -> dict[str, Any]:
    """examples/compare/grounding.toml on the codes of the recorded comparison's seed-0 baseline."""
    tokenizer = comparison_run_dir(records)
    sets = [a for o in overrides for a in ("--set", o)]
    command = lgvq("run", "examples/compare/grounding.toml", "--set", f"tokenizer.run_dir={tokenizer}", *sets)
    output, times = timed(command, ROOT)
    return {"commands": [" ".join(command[2:])], "times": times, "run": summarise_run(run_directory(output))}


#: Example name -> how it runs: ``(--set overrides, folder of the records) -> record``.
EXAMPLES: dict[str, Callable[[list[str], Path], dict[str, Any]]] = {
    "quickstart": run_quickstart,
    "downstream": run_downstream,
    "levers": run_levers,
    "compare": run_compare,
    "grounding": run_grounding,
}


# ------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------
def minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def machine_words(record: dict[str, Any]) -> str:
    m = record["machine"]
    load = m["load_average"][0]
    return f"{m['cpu_model']}, {m['cores']} cores, load {load:.1f} when it started"


def render_quickstart(record: dict[str, Any]) -> str:
    run, times = record["run"], record["times"]
    val, results = run["validation"], run["results"]
    masked = ("masked-words", "leak-free", "mask-1")
    return (
        f"The measured quickstart took {minutes(times['wall_s'])} wall-clock and {minutes(times['cpu_s'])} of CPU "
        f"time ({machine_words(record)}; lgvq {record['commit']}; {run['steps']:,} steps, "
        f"{run['training_s']:.0f} s of them training). It ended at validation PSNR {val.get('psnr', float('nan')):.1f} dB "
        f"with {val.get('codebook_usage', float('nan')):.0%} of the codes in use; retrieval R@1 "
        f"{_nested(results, 'retrieval', 'r@1'):.2f}; leak-free masked-word R@1 "
        f"{_nested(results, *masked, 'recall@1'):.2f} ({_nested(results, *masked, 'shuffled_recall@1'):.2f} with "
        "the images shuffled).\n"
    )


def _span(values: list[float], digits: int = 2) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}–{high:.{digits}f}"


def render_quickstart_probe(record: dict[str, Any]) -> str:
    """What the quickstart's code probe reads from the codes, attribute group by group, beside the majority answer."""
    attributes = record["run"]["results"]["code-probe"]["attributes"]

    def group(names: list[str]) -> tuple[str, str]:
        chosen = [attributes[name] for name in names]
        return _span([a["linear"] for a in chosen]), _span([a["majority"] for a in chosen])

    kinds = [f"has_{kind}" for kind in ("circle", "square", "triangle", "diamond", "star")]
    colours = [name for name in attributes if name.startswith("has_") and name not in kinds]
    colour, colour_majority = group(colours)
    kind, kind_majority = group(kinds)
    one = {
        name: (attributes[name]["linear"], attributes[name]["majority"])
        for name in ("background", "count", "largest_position")
    }
    return (
        "The code probe of the measured quickstart run says the same in numbers: a linear probe on the frozen code "
        f"vectors reads the background ({one['background'][0]:.2f}, majority answer {one['background'][1]:.2f}), "
        f"colours ({colour}, majority {colour_majority}), the number of shapes ({one['count'][0]:.2f}, majority "
        f"{one['count'][1]:.2f}) and the largest shape's position ({one['largest_position'][0]:.2f}, majority "
        f"{one['largest_position'][1]:.2f}), and a shape's kind at {kind} where the majority answer scores "
        f"{kind_majority}.\n"
    )


def render_downstream(record: dict[str, Any]) -> str:
    times = record["times"]
    tokenizer, prior = record["run"]["tokenizer"], record["run"]["prior"]
    val = tokenizer["validation"]
    fid = prior["results"].get("generation-fid", {})
    bits = prior["validation"].get("bits_per_code", float("nan"))
    return (
        f"Measured on {machine_words(record)} (lgvq {record['commit']}): the tokenizer run took "
        f"{minutes(times['tokenizer']['wall_s'])} wall-clock, {minutes(times['tokenizer']['cpu_s'])} of CPU time "
        f"({tokenizer['steps']:,} steps), the prior {minutes(times['prior']['wall_s'])} wall-clock, "
        f"{minutes(times['prior']['cpu_s'])} of CPU time ({prior['steps']:,} steps, with its end-of-run FID). "
        f"The tokenizer ended at validation PSNR {val.get('psnr', float('nan')):.1f} dB with "
        f"{val.get('codebook_usage', float('nan')):.0%} of the codes in use, the prior at {bits:.2f} bits per code, "
        f"and the FID of its samples was {fid.get('fid', float('nan')):.1f} (floor "
        f"{_nested(fid, 'floor', 'fid'):.1f}, ceiling {_nested(fid, 'ceiling', 'fid'):.0f}).\n"
    )


def _nested(data: dict[str, Any], *keys: str) -> float:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return float("nan")
        data = data[key]
    return float(data) if isinstance(data, (int, float)) else float("nan")


def render_levers(record: dict[str, Any]) -> str:
    """The lever bench's own table (``recipe_levers.table``) and the machine and time under it."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    from recipe_levers import table

    times = record["times"]
    return (
        table(record["rows"], record["steps"])
        + f"\n\nMeasured on {machine_words(record)} (lgvq {record['commit']}, `{record['commands'][0]}`): "
        f"{minutes(times['wall_s'])} wall-clock and {minutes(times['cpu_s'])} of CPU time for the {len(record['rows'])} runs.\n"
    )


def render_levers_summary(record: dict[str, Any]) -> str:
    """The sentences under the lever table: each number from the record's rows."""
    row = {r["variant"]: r for r in record["rows"]}
    missing = sorted({"plain", "restarts", "ema", "kmeans", "factorised", "bf16", "recipe", "recipe+lg"} - set(row))
    if missing:
        raise SystemExit(
            f"the lever record lacks the variant(s) {', '.join(missing)} (run bench/example_numbers.py levers)"
        )
    plain, restarts = row["plain"], row["restarts"]
    others = [row[name]["usage"] for name in ("betas", "bf16", "batch-64") if name in row]
    others_words = f" ({_span([100 * u for u in others], 0)} % of the codes)" if others else ""
    recipe, lg = row["recipe"], row["recipe+lg"]
    return (
        "Dead-code restarts (`dead_code_threshold = 1.0`: a code picked less than once per batch, on an\n"
        "exponential average, moves onto a latent of the batch) are the lever that matters: alone they take\n"
        f"usage from {plain['usage']:.1%} to {restarts['usage']:.1%} of the 256 codes and PSNR from {plain['psnr']:.1f} "
        f"to {restarts['psnr']:.1f} dB. EMA updates help less\n({row['ema']['usage']:.1%}); k-means initialisation "
        f"({row['kmeans']['usage']:.1%}) and a factorised l2-normalised lookup\n(`cosine`, `lookup_dim = 8`; "
        f"{row['factorised']['usage']:.1%}) hardly move usage on their own. Adam betas (0.9, 0.99), bf16\n"
        f"autocast and a batch of 64 do not fix collapse either{others_words}; bf16 is there for speed:\n"
        f"{row['bf16']['seconds']:.0f} s wall-clock and {row['bf16']['cpu_seconds']:.0f} s of CPU time for the run "
        f"in bf16 against {plain['seconds']:.0f} s and {plain['cpu_seconds']:.0f} s in fp32. All together, the recipe "
        f"without\nLG reaches {recipe['psnr']:.1f} dB with {recipe['usage']:.0%} of the codes in use; with its LG "
        f"losses {lg['psnr']:.1f} dB and {lg['usage']:.0%}.\n"
    )


#: The rows of the comparison that the README shows (docs/results/small-compare.md shows every row).
COMPARE_README_ROWS = (
    "training steps",
    "PSNR",
    "SSIM",
    "codebook usage",
    "perplexity",
    "code-probe: linear_mean",
    "code-probe: mlp_mean",
    "code-probe: shuffled_mean",
    "code-probe: majority_mean",
    "code-probe: attributes.count.linear",
    "code-probe: attributes.has_circle.linear",
    "code-probe: attributes.has_red.linear",
    "code-probe: attributes.largest_position.linear",
    "retrieval R@1",
    "retrieval R@1 by chance",
    "retrieval head",
    "masked words Mask-1 R@1, leak-free",
    "masked words Mask-1 R@1, leak-free, images shuffled",
    "masked words Mask-1 R@1, official (leaky)",
    "masked-text head",
    "relation MSE",
    "vqa: vqa-scores: accuracy",
    "vqa: vqa-scores: shuffled_images.accuracy",
    "vqa: vqa-scores: question_only.accuracy",
    "vqa: vqa-scores: answer_prior.accuracy",
    "vqa: vqa-scores: per_type.object.accuracy",
    "vqa: vqa-scores: per_type.number.accuracy",
    "vqa: vqa-scores: per_type.color.accuracy",
    "vqa: vqa-scores: per_type.location.accuracy",
    "captioning: caption-scores: cider_d",
    "captioning: caption-scores: shuffled_images.cider_d",
    "captioning: caption-scores: most_frequent_caption.cider_d",
    "captioning: caption-scores: bleu4",
    "unconditional: generation-fid: fid",
    "unconditional: generation-fid: floor.fid",
    "unconditional: generation-fid: ceiling.fid",
    "unconditional: generation-fid: attributes.tv_mean",
    "unconditional: validation: bits_per_code",
)


def _comparison_table(comparison: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The markdown table ``lgvq compare`` writes, for ``rows`` (its own formatting, without the rule)."""
    from lgvq_core.runner.compare import render_markdown

    text = render_markdown({**comparison, "rows": rows, "rule": "", "context": {}})
    return text.split("\n\n", 1)[0] + "\n"


def _row(comparison: dict[str, Any], metric: str) -> dict[str, Any]:
    for row in comparison["rows"]:
        if row["metric"] == metric:
            return row
    raise SystemExit(f"the comparison record has no row {metric!r} (run bench/example_numbers.py compare)")


def _mean(comparison: dict[str, Any], metric: str, arm: str = "baseline") -> float:
    value = _row(comparison, metric)["mean"].get(arm)
    return float("nan") if value is None else float(value)


def render_compare_time(record: dict[str, Any]) -> str:
    times, comparison = record["times"], record["comparison"]
    return (
        f"Machine: {comparison['machine']}. Time: {minutes(times['wall_s'])} wall-clock for the command; its "
        f"{times['runs']} runs took {minutes(times['runs_wall_s'])} of wall-clock and {minutes(times['cpu_s'])} of "
        f"CPU time together (lgvq {record['commit']}; `{record['commands'][0]}`).\n"
    )


def render_compare_table(record: dict[str, Any]) -> str:
    comparison = record["comparison"]
    return _comparison_table(comparison, [_row(comparison, metric) for metric in COMPARE_README_ROWS])


def render_compare_full(record: dict[str, Any]) -> str:
    from lgvq_core.runner.compare import render_markdown

    comparison = record["comparison"]
    context = {"Command": f"`{record['commands'][0]}`", "Machine": comparison["machine"]}
    times = record["times"]
    context["Time"] = (
        f"{minutes(times['wall_s'])} wall-clock for the command; {times['runs']} runs, {minutes(times['runs_wall_s'])} "
        f"of wall-clock and {minutes(times['cpu_s'])} of CPU time together; lgvq {record['commit']}"
    )
    return render_markdown({**comparison, "context": context})


def render_compare_bars(record: dict[str, Any]) -> str:
    """The bars of the baseline tokenizer's downstream models, from the comparison (means over the seeds)."""
    c = record["comparison"]
    probe, cider, vqa, fid = "code-probe: ", "captioning: caption-scores: ", "vqa: vqa-scores: ", "unconditional: "
    linear = _mean(c, probe + "linear_mean")
    shuffled_labels, majority = _mean(c, probe + "shuffled_mean"), _mean(c, probe + "majority_mean")
    caption, caption_shuffled = _mean(c, cider + "cider_d"), _mean(c, cider + "shuffled_images.cider_d")
    accuracy, accuracy_shuffled = _mean(c, vqa + "accuracy"), _mean(c, vqa + "shuffled_images.accuracy")
    generation = _mean(c, fid + "generation-fid: fid")
    yes_no = "yes" if linear > max(shuffled_labels, majority) else "no"
    return (
        "\n".join(
            [
                "| task | model | control and trivial baselines | bar | reached |",
                "|---|---|---|---|---|",
                f"| code probe (linear, 16 attributes) | {linear:.3f} | shuffled labels {shuffled_labels:.3f}, majority "
                f"answer {majority:.3f} | above both | {yes_no} |",
                f"| captioning, CIDEr-D | {caption:.2f} | shuffled images {caption_shuffled:.2f}, most frequent caption "
                f"{_mean(c, cider + 'most_frequent_caption.cider_d'):.2f} | ≥ 2 × shuffled | "
                f"{'yes' if caption >= 2 * caption_shuffled else 'no'} ({caption / caption_shuffled:.1f}×) |",
                f"| VQA, accuracy | {accuracy:.3f} | shuffled images {accuracy_shuffled:.3f}, question-only "
                f"{_mean(c, vqa + 'question_only.accuracy'):.3f}, answer prior {_mean(c, vqa + 'answer_prior.accuracy'):.3f}"
                f" | shuffled + 0.25 | {'yes' if accuracy - accuracy_shuffled >= 0.25 else 'no'} "
                f"(+{accuracy - accuracy_shuffled:.2f}) |",
                f"| unconditional prior, FID (256 vs 256) | {generation:.0f} | floor "
                f"{_mean(c, fid + 'generation-fid: floor.fid'):.0f} (validation halves), ceiling "
                f"{_mean(c, fid + 'generation-fid: ceiling.fid'):.0f} (mean image) | ≤ 145 (half of the former ≈ 290) | "
                f"{'yes' if generation <= 145 else 'no'} |",
            ]
        )
        + "\n"
    )


def render_compare_vqa_types(record: dict[str, Any]) -> str:
    c, vqa = record["comparison"], "vqa: vqa-scores: "
    lines = ["| type | model | shuffled images | question-only | answer prior |", "|---|---:|---:|---:|---:|"]
    for kind in ("object", "number", "color", "location"):
        cells = [
            _mean(c, f"{vqa}{prefix}per_type.{kind}.accuracy")
            for prefix in ("", "shuffled_images.", "question_only.", "answer_prior.")
        ]
        lines.append(f"| {kind} | " + " | ".join(f"{x:.3f}" for x in cells) + " |")
    return "\n".join(lines) + "\n"


def render_grounding(record: dict[str, Any]) -> str:
    run, times = record["run"], record["times"]
    scores = run["results"].get("grounding-scores", {})
    accuracy = _nested(scores, "acc@0.5")
    return (
        f"Trained once on the seed-0 baseline codes of the comparison above with `examples/compare/grounding.toml` "
        f"({run['steps']:,} steps of batch 64; {minutes(times['wall_s'])} wall-clock, {minutes(times['cpu_s'])} of "
        f"CPU time on {machine_words(record)}; lgvq {record['commit']}), grounding places the box of "
        f"{accuracy:.0%} of the {int(_nested(scores, 'expressions')):,} validation expressions at IoU ≥ 0.5 (mean "
        f"IoU {_nested(scores, 'mean_iou'):.2f}), against {_nested(scores, 'shuffled_images', 'acc@0.5'):.0%} with "
        f"the images shuffled and {_nested(scores, 'constant_box', 'acc@0.5'):.0%} for the mean training box: the "
        f"bar of Acc@0.5 ≥ 0.5 is {'reached' if accuracy >= 0.5 else 'not reached'}.\n"
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "quickstart": render_quickstart,
    "quickstart:probe": render_quickstart_probe,
    "downstream": render_downstream,
    "levers": render_levers,
    "levers:summary": render_levers_summary,
    "compare:time": render_compare_time,
    "compare:table": render_compare_table,
    "compare:full": render_compare_full,
    "compare:bars": render_compare_bars,
    "compare:vqa-types": render_compare_vqa_types,
    "grounding": render_grounding,
}


def render_documents(records: Path = RECORDS, documents: tuple[Path, ...] = DOCUMENTS, write: bool = True) -> list[str]:
    """Rewrite every marked block from its record; the names of the blocks that changed."""
    changed = []
    for document in documents:
        text = document.read_text(encoding="utf-8")

        def replace(match: re.Match[str], document: Path = document) -> str:
            name, part = match.group("name"), match.group("part")
            key = f"{name}:{part}" if part else name
            path = records / f"{name}.json"
            if key not in RENDERERS:
                raise SystemExit(f"{document}: block {key!r} is not one of {', '.join(RENDERERS)}")
            if not path.is_file():
                raise SystemExit(
                    f"{document}: block {key!r} has no record {path} (run bench/example_numbers.py {name})"
                )
            body = RENDERERS[key](json.loads(path.read_text(encoding="utf-8")))
            if body != match.group("body"):
                changed.append(f"{document.name}:{key}")
            return match.group("open") + body + match.group("close")

        new = BLOCK.sub(replace, text)
        if write and new != text:
            document.write_text(new, encoding="utf-8")
    return changed


def write_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON file per record (the comparison's, with every row, one level of indentation: smaller)."""
    indent = 1 if "comparison" in record else 2
    path.write_text(json.dumps(record, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", nargs="*", help=f"examples to run: {', '.join(EXAMPLES)} (default: all)")
    parser.add_argument("--render", action="store_true", help="only rewrite the marked blocks from the records")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--records", type=Path, default=RECORDS, help="folder of the records")
    parser.add_argument(
        "--from-comparison",
        type=Path,
        metavar="DIR",
        help="record the comparison that already ran into DIR (its compare.json and compare-state.json)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.examples) - set(EXAMPLES))
    if unknown:
        parser.error(f"unknown example(s) {', '.join(unknown)}; the examples are {', '.join(EXAMPLES)}")
    if args.from_comparison is not None:
        record = {
            "example": "compare",
            "machine": machine(),
            "commit": commit(),
            **comparison_record(args.from_comparison),
        }
        record["machine"]["load_average"] = None  # recorded afterwards: the load while it ran is unknown
        args.records.mkdir(parents=True, exist_ok=True)
        write_record(args.records / "compare.json", record)
        print(f"wrote {args.records / 'compare.json'}")
    elif not args.render:
        args.records.mkdir(parents=True, exist_ok=True)
        for name in args.examples or list(EXAMPLES):
            started = machine()
            record = {"example": name, "machine": started, "commit": commit(), **EXAMPLES[name](args.set, args.records)}
            record["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            if args.set:
                record["overrides"] = list(args.set)
            write_record(args.records / f"{name}.json", record)
            print(f"wrote {args.records / f'{name}.json'}")
    changed = render_documents(args.records)
    print("rewrote: " + (", ".join(changed) if changed else "nothing (the blocks already match the records)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
