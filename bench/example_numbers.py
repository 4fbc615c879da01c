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

and are rewritten from the records (``--render`` alone rewrites them without running anything).
``tests/integration/test_example_numbers.py`` fails when a marked block differs from what its
record renders, so a number in them cannot be edited by hand or outlive its run.

    python bench/example_numbers.py                 # run every example (about 20 min on 2 cores), then render
    python bench/example_numbers.py quickstart      # one example
    python bench/example_numbers.py --render        # only rewrite the marked blocks from the records
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
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "downstream.md")
BLOCK = re.compile(r"(<!-- example-numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /example-numbers -->)", re.S)


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


def run_quickstart(overrides: list[str]) -> dict[str, Any]:
    command = lgvq("run", "examples/quickstart.toml", *[a for o in overrides for a in ("--set", o)])
    output, times = timed(command, ROOT)
    return {"commands": [" ".join(command[2:])], "times": times, "run": summarise_run(run_directory(output))}


def run_downstream(overrides: list[str]) -> dict[str, Any]:
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


EXAMPLES: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "quickstart": run_quickstart,
    "downstream": run_downstream,
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


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "quickstart": render_quickstart,
    "downstream": render_downstream,
}


def render_documents(records: Path = RECORDS, documents: tuple[Path, ...] = DOCUMENTS, write: bool = True) -> list[str]:
    """Rewrite every marked block from its record; the names of the blocks that changed."""
    changed = []
    for document in documents:
        text = document.read_text(encoding="utf-8")

        def replace(match: re.Match[str], document: Path = document) -> str:
            name = match.group("name")
            path = records / f"{name}.json"
            if not path.is_file() or name not in RENDERERS:
                raise SystemExit(
                    f"{document}: block {name!r} has no record {path} (run bench/example_numbers.py {name})"
                )
            body = RENDERERS[name](json.loads(path.read_text(encoding="utf-8")))
            if body != match.group("body"):
                changed.append(f"{document.name}:{name}")
            return match.group(1) + body + match.group(4)

        new = BLOCK.sub(replace, text)
        if write and new != text:
            document.write_text(new, encoding="utf-8")
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", nargs="*", help=f"examples to run: {', '.join(EXAMPLES)} (default: all)")
    parser.add_argument("--render", action="store_true", help="only rewrite the marked blocks from the records")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--records", type=Path, default=RECORDS, help="folder of the records")
    args = parser.parse_args()
    unknown = sorted(set(args.examples) - set(EXAMPLES))
    if unknown:
        parser.error(f"unknown example(s) {', '.join(unknown)}; the examples are {', '.join(EXAMPLES)}")
    if not args.render:
        args.records.mkdir(parents=True, exist_ok=True)
        for name in args.examples or list(EXAMPLES):
            started = machine()
            record = {"example": name, "machine": started, "commit": commit(), **EXAMPLES[name](args.set)}
            record["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            if args.set:
                record["overrides"] = list(args.set)
            (args.records / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.records / f'{name}.json'}")
    changed = render_documents(args.records)
    print("rewrote: " + (", ".join(changed) if changed else "nothing (the blocks already match the records)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
