"""``lgvq compare FILE``: train and evaluate every arm once per seed, then table them.

The arms and seeds come from the run file's ``[compare]`` table (default arms: the file as given,
"LG-VQ", and without its ``[[alignment]]`` losses, "baseline"; default seeds: ``run.seed``), or
``--seeds N``. Everything lives in one comparison folder (default
``<run.output_dir>/<run.name>-comparison``)::

    compare-state.json        finished runs: arm, seed, run directory, config fingerprint, seconds
    seed-<s>/<run name>/<id>/ the run directory of each arm and seed (<run name>.log with --jobs)
    compare.md, compare.json  the table (:mod:`lgvq_core.runner.compare`)

Running the same command again resumes: a run recorded as finished, whose configuration (seed
included, ``[compare]`` and output settings excluded) is unchanged, is not trained again. A run
that was started but not finished is trained again from scratch, or continued from its
``checkpoints/last`` with ``--resume``. The state file is rewritten atomically after each
finished run, by this process only.

Arms of other kinds of runs (downstream runs on an arm's codes) go through the same machinery with
their own ``runner``: a picklable function from a :class:`RunSpec` to a :class:`RunOutcome` that
leaves an evaluated run directory (``eval/<task>.json``) under ``spec.output_dir``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import attrs

from lgvq_core.atomic import write_json_atomic
from lgvq_core.config.describe import unstructure
from lgvq_core.config.fields import finite
from lgvq_core.config.walker import structure_leaf
from lgvq_core.errors import LgvqError, RunDirError
from lgvq_core.registry import get_registry
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.compare import compare_arms, run_info
from lgvq_core.runner.rundir import cpu_model

STATE_FILE = "compare-state.json"
STATE_VERSION = 1

#: The default arms: the run file as given, and the same without its alignment losses.
DEFAULT_ARMS: tuple[tuple[str, tuple[str, ...]], ...] = (("LG-VQ", ()), ("baseline", ("alignment=[]",)))


class ComparisonInterrupted(LgvqError):
    """A run of the comparison stopped before ``train.max_steps`` (a signal, or a stop request)."""


@dataclass(frozen=True)
class RunSpec:
    """One training of a comparison: an arm with one seed."""

    arm: str
    seed: int
    file: str
    overrides: tuple[str, ...]  # --set overrides, the arm's, the seed, run name and output folder
    output_dir: str  # the run directory is created as <output_dir>/<run name>/<id>
    resume_dir: str | None = None  # continue this unfinished run from checkpoints/last
    threads: int | None = None  # torch threads of this run (parallel jobs share the cores)


@dataclass(frozen=True)
class RunOutcome:
    run_dir: str
    stop_reason: str  # "max_steps" when finished
    seconds: float
    threads: int | None = None
    #: CPU time of the run's process (user + system, every thread): the machine's load changes
    #: ``seconds``, hardly this.
    cpu_seconds: float | None = None


def train_and_evaluate(spec: RunSpec) -> RunOutcome:
    """The default runner: ``lgvq run`` of the spec (which evaluates the run's ``[[tasks]]``)."""
    import torch

    from lgvq_core.runner.loop import (
        describe_result,
        train,
    )  # lazy: imports torch, in the process that trains; planning does not

    started = time.perf_counter()
    cpu_started = time.process_time()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    loaded = load_run_file(spec.file, overrides=list(spec.overrides))
    source = Path(spec.file).read_text(encoding="utf-8")
    result = train(loaded, source_text=source, overrides=list(spec.overrides), resume_dir=spec.resume_dir)
    print(describe_result(result), flush=True)
    seconds = time.perf_counter() - started  # training and evaluation
    cpu_seconds = time.process_time() - cpu_started
    return RunOutcome(str(result.run_dir), result.stop_reason, seconds, torch.get_num_threads(), cpu_seconds)


# ------------------------------------------------------------------------------------------
# the plan: arms x seeds
# ------------------------------------------------------------------------------------------
def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "arm"


def choose_seeds(configured: Sequence[int], run_seed: int, count: int | None) -> list[int]:
    """``[compare] seeds`` (default ``[run.seed]``); ``--seeds N`` takes its first N, continued upwards."""
    seeds = list(configured) or [run_seed]
    if count is None:
        return seeds
    if count < 1:
        raise LgvqError(f"--seeds must be at least 1, got {count}")
    candidate = max(seeds) + 1
    while len(seeds) < count:
        seeds.append(candidate)
        candidate += 1
    return seeds[:count]


def fingerprint(config: Any) -> str:
    """A hash of everything that shapes a run's numbers (not ``[compare]``, progress or folders)."""

    data = unstructure(config)
    data.pop("compare", None)
    for key in ("progress", "output_dir", "name", "log_every"):
        data["run"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    run_name: str
    fingerprint: str
    #: A downstream run's label (its run file's name); empty for the arm's tokenizer run.
    part: str = ""
    #: Whether the ``[compare] downstream`` models are trained on this (tokenizer) run's codes.
    downstream: bool = True

    @property
    def key(self) -> str:
        key = f"{self.spec.arm}/seed-{self.spec.seed}"
        return f"{key}/{self.part}" if self.part else key


def plan(
    file: str | Path, overrides: Sequence[str], seed_count: int | None, out: str | Path | None
) -> tuple[Path, list[str], list[int], list[PlannedRun]]:
    """Validate every arm x seed up front; return the folder, arm labels, seeds and runs (arm-major)."""

    file = Path(file)
    config = load_run_file(file, overrides=list(overrides)).config
    if config.compare.arms:
        arms = [(arm.label, tuple(arm.overrides), arm.downstream) for arm in config.compare.arms]
    else:
        if not config.alignment:
            raise RunDirError(
                f"{file}: has no [[alignment]] losses, so there is no LG-VQ variant to compare; "
                "add them, or name the arms in [[compare.arms]]"
            )
        arms = [(label, arm_overrides, True) for label, arm_overrides in DEFAULT_ARMS]
    if not config.tasks:
        raise RunDirError(f"{file}: has no [[tasks]]; add the evaluation tasks the table should show")
    seeds = choose_seeds(config.compare.seeds, config.run.seed, seed_count)
    folder = Path(out) if out else Path(config.run.output_dir) / f"{config.run.name}-comparison"
    runs = []
    for label, arm_overrides, downstream in arms:
        run_name = f"{config.run.name}-{_slug(label)}"
        for seed in seeds:
            output_dir = folder / f"seed-{seed}"
            spec_overrides = (
                *overrides,
                *arm_overrides,
                f"run.seed={seed}",
                f"run.name={run_name}",
                f"run.output_dir={output_dir.as_posix()}",
            )
            loaded = load_run_file(file, overrides=list(spec_overrides))
            spec = RunSpec(label, seed, str(file), spec_overrides, str(output_dir))
            runs.append(PlannedRun(spec, run_name, fingerprint(loaded.config), downstream=downstream))
    return folder, [label for label, _, _ in arms], seeds, runs


# ------------------------------------------------------------------------------------------
# the state file
# ------------------------------------------------------------------------------------------
@attrs.define
class _StateEntry:
    """One finished run in ``compare-state.json`` (the shape :meth:`ComparisonState.record` writes)."""

    run_dir: str
    fingerprint: str
    arm: str = ""
    seed: int = 0
    stop_reason: str = "max_steps"
    seconds: float = attrs.field(default=0.0, validator=finite)
    threads: int | None = None
    cpu_seconds: float | None = None
    finished: str = ""


@attrs.define
class _StateFile:
    version: int
    runs: dict[str, _StateEntry] = attrs.Factory(dict)
    started: dict[str, str] = attrs.Factory(dict)


def check_state(data: dict[str, Any], path: Path) -> None:
    """Raise one clear error naming the first bad key of a comparison state file."""

    def fail(where: str, message: str) -> None:
        raise RunDirError(f"{path}: {where}: {message}; delete it to start over (finished runs are then trained again)")

    # the containers and required keys first, for messages cattrs would word as Python errors
    for table in ("runs", "started"):
        if not isinstance(data.get(table, {}), dict):
            fail(f"$.{table}", f"expected a table, got {type(data[table]).__name__}")
    for key, entry in data.get("runs", {}).items():
        where = f"$.runs[{key!r}]"
        if not isinstance(entry, dict):
            fail(where, f"expected a table, got {type(entry).__name__}")
        for required in ("run_dir", "fingerprint"):
            if required not in entry:
                fail(where, f"missing {required!r}")
        seconds = entry.get("seconds", 0.0)
        if isinstance(seconds, float) and not math.isfinite(seconds):
            fail(f"{where}.seconds", f"must be a finite number, got {seconds}")
    _, problems = structure_leaf(data, _StateFile, "$")
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        fail(first.path, first.message + more)


class ComparisonState:
    """``compare-state.json``: which runs of the comparison finished, rewritten atomically."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STATE_FILE
        self.runs: dict[str, dict[str, Any]] = {}
        self.started: dict[str, str] = {}  # run key -> fingerprint of its latest start
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise RunDirError(
                    f"{self.path}: unreadable comparison state ({exc}); delete it to start over"
                ) from None
            if not isinstance(data, dict):
                raise RunDirError(
                    f"{self.path}: $: expected a table of the comparison's runs, got {type(data).__name__}; "
                    "delete it to start over (finished runs are then trained again)"
                )
            if data.get("version") != STATE_VERSION:
                raise RunDirError(f"{self.path}: state version {data.get('version')!r}, expected {STATE_VERSION}")
            check_state(data, self.path)
            self.runs = data.get("runs", {})
            self.started = data.get("started", {})

    def finished(self, run: PlannedRun) -> dict[str, Any] | None:
        """The recorded finished run, if its configuration is unchanged and its directory still there."""
        entry = self.runs.get(run.key)
        if entry is None or entry.get("fingerprint") != run.fingerprint:
            return None
        if not (Path(entry["run_dir"]) / "eval").is_dir():
            return None
        return entry

    def why_not_finished(self, run: PlannedRun) -> str | None:
        """Why a run recorded as finished is not kept (None when it was never recorded, or is kept)."""
        entry = self.runs.get(run.key)
        if entry is None or self.finished(run) is not None:
            return None
        if entry.get("fingerprint") != run.fingerprint:
            return "its configuration changed since it was trained"
        return f"its run directory {entry['run_dir']} or its eval/ folder is gone"

    def record(self, run: PlannedRun, outcome: RunOutcome) -> dict[str, Any]:
        entry = {
            "arm": run.spec.arm,
            "seed": run.spec.seed,
            "fingerprint": run.fingerprint,
            **asdict(outcome),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.runs[run.key] = entry
        self._write()
        return entry

    def mark_started(self, run: PlannedRun) -> None:
        """Remember the configuration a run was started with (a leftover is resumed only under it)."""
        self.started[run.key] = run.fingerprint
        self._write()

    def _write(self) -> None:

        write_json_atomic(self.path, {"version": STATE_VERSION, "runs": self.runs, "started": self.started})


def unfinished_run_dir(run: PlannedRun, state: ComparisonState) -> Path | None:
    """The newest run directory of this arm and seed that is not recorded as finished."""
    root = Path(run.spec.output_dir) / run.run_name
    if not root.is_dir():
        return None
    done = {Path(entry["run_dir"]).resolve() for entry in state.runs.values()}
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() not in done)
    return candidates[-1] if candidates else None


def _resumable(run_dir: Path | None) -> bool:
    return run_dir is not None and (run_dir / "checkpoints" / "last.json").is_file()


# ------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------
Runner = Callable[[RunSpec], RunOutcome]


def _run_logged(runner: Runner, spec: RunSpec, log_file: str) -> RunOutcome:
    """A parallel job: the run's own output goes to ``log_file`` (file descriptors 1 and 2)."""
    with open(log_file, "a", encoding="utf-8") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        return runner(spec)


def _prepare(run: PlannedRun, state: ComparisonState, resume: bool, say: Callable[[str], None]) -> RunSpec:
    """The spec to train: restarted, or continued from ``last`` with ``resume``."""
    leftover = unfinished_run_dir(run, state)
    same_config = state.started.get(run.key) == run.fingerprint
    spec = run.spec
    if leftover is not None:
        if resume and same_config and _resumable(leftover):
            say(f"continuing {leftover} from checkpoints/last")
            spec = RunSpec(**{**asdict(run.spec), "resume_dir": str(leftover)})
        elif resume and not same_config:
            say(f"{leftover} was started with another configuration; training again from step 0")
        elif resume:
            say(f"{leftover} saved no checkpoint; training again from step 0")
        else:
            say(f"{leftover} did not finish; training again from step 0 (--resume continues it)")
    state.mark_started(run)
    return spec


def run_comparison(
    file: str | Path,
    overrides: Sequence[str] = (),
    seed_count: int | None = None,
    out: str | Path | None = None,
    jobs: int = 1,
    resume: bool = False,
    runner: Runner = train_and_evaluate,
    say: Callable[[str], None] = lambda message: print(message, flush=True),
) -> tuple[str, dict[str, Any], Path]:
    """Train what is missing, then write and return the table: ``(markdown, data, folder)``."""

    if jobs < 1:
        raise LgvqError(f"--jobs must be at least 1, got {jobs}")
    started = time.perf_counter()
    folder, labels, seeds, runs = plan(file, overrides, seed_count, out)
    folder.mkdir(parents=True, exist_ok=True)
    state = ComparisonState(folder)
    total = len(runs)
    todo: list[tuple[int, PlannedRun]] = []
    for index, run in enumerate(runs, start=1):
        prefix = f"[{index}/{total}] {run.spec.arm}, seed {run.spec.seed}"
        entry = state.finished(run)
        if entry is not None:
            say(f"{prefix}: finished earlier, kept ({entry['run_dir']})")
        else:
            reason = state.why_not_finished(run)
            if reason is not None:
                say(f"{prefix}: {reason}; training again")
            todo.append((index, run))

    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    _run_todo(todo, total, state, resume, runner, jobs, threads, say, file)

    tokenizer_dirs = {run.key: state.finished(run)["run_dir"] for run in runs}
    downstream = plan_downstream(file, overrides, runs, tokenizer_dirs)
    _train_planned(downstream, state, resume, runner, jobs, threads, say, file)

    arms = {label: {} for label in labels}
    for run in runs:
        entry = state.finished(run)
        if entry is None:  # pragma: no cover - every run finished or raised above
            raise RunDirError(f"{run.key}: not finished")
        arms[run.spec.arm][run.spec.seed] = run_info(entry["run_dir"])
    for run in downstream:
        merge_downstream(arms[run.spec.arm][run.spec.seed], run.part, run_info(state.finished(run)["run_dir"]))
    every = runs + downstream
    context = _context(file, overrides, seed_count, jobs, [state.runs[r.key] for r in every], started)
    reference = load_run_file(file, overrides=list(overrides)).config.compare.reference
    markdown, data = compare_arms(arms, folder, context, reference)
    return markdown, data, folder


def _prefix(index: int, total: int, run: PlannedRun) -> str:
    part = f", {run.part}" if run.part else ""
    return f"[{index}/{total}] {run.spec.arm}, seed {run.spec.seed}{part}"


def _run_todo(todo, total, state, resume, runner, jobs, threads, say, file) -> None:
    if jobs == 1:
        for index, run in todo:
            prefix = _prefix(index, total, run)
            spec = _prepare(run, state, resume, lambda m, p=prefix: say(f"{p}: {m}"))
            say(f"{prefix}: training (lgvq run {spec.file} {' '.join('--set ' + o for o in spec.overrides)})")
            _finish(run, runner(spec), state, prefix, say)
    else:
        _run_parallel(todo, total, state, resume, runner, jobs, threads, say)


def _train_planned(planned, state, resume, runner, jobs, threads, say, file) -> None:
    """Train the planned runs not recorded as finished (the downstream phase)."""
    todo = []
    for index, run in enumerate(planned, start=1):
        entry = state.finished(run)
        if entry is not None:
            say(f"{_prefix(index, len(planned), run)}: finished earlier, kept ({entry['run_dir']})")
        else:
            todo.append((index, run))
    _run_todo(todo, len(planned), state, resume, runner, jobs, threads, say, file)


def plan_downstream(
    file: str | Path, overrides: Sequence[str], runs: Sequence[PlannedRun], tokenizer_dirs: dict[str, str]
) -> list[PlannedRun]:
    """One downstream run per ``[compare] downstream`` file, arm and seed, on that arm's tokenizer run."""

    file = Path(file)
    listed = load_run_file(file, overrides=list(overrides)).config.compare.downstream
    planned = []
    for entry in listed:
        path = (file.parent / entry).resolve()
        if not path.is_file():
            raise RunDirError(f"{file}: [compare] downstream names {entry!r}, but {path} does not exist")
        part = path.stem
        for run in runs:
            if not run.downstream:
                continue
            output_dir = Path(run.spec.output_dir)
            run_name = f"{run.run_name}-{_slug(part)}"
            spec_overrides = (
                f"tokenizer.run_dir={Path(tokenizer_dirs[run.key]).as_posix()}",
                f"run.seed={run.spec.seed}",
                f"run.name={run_name}",
                f"run.output_dir={output_dir.as_posix()}",
            )
            loaded = load_run_file(path, overrides=list(spec_overrides))
            spec = RunSpec(run.spec.arm, run.spec.seed, str(path), spec_overrides, str(output_dir))
            planned.append(PlannedRun(spec, run_name, fingerprint(loaded.config), part))
    return planned


def task_controls(task: str) -> tuple[str, ...]:
    """The sub-results task ``task`` declares as controls, baselines or bounds (its ``TaskSpec``)."""
    try:
        spec = get_registry().get("task", task).spec
    except LgvqError:  # not installed here: its numbers are still shown, its controls are not told apart
        return ()
    return tuple(getattr(spec, "comparison_controls", ()))


def merge_downstream(
    info: dict[str, Any],
    part: str,
    downstream: dict[str, Any],
    controls_of: Callable[[str], tuple[str, ...]] = task_controls,
) -> None:
    """A downstream run's results as ``<file>: <task>`` rows of its arm: the numbers its tasks rank
    (``better``), the same numbers of their controls, baselines and bounds (unranked: the task's
    ``comparison_controls``),
    and the run's validation NLL."""
    for task, metrics in downstream["eval"].items():
        better = metrics.get("better") if isinstance(metrics, dict) else None
        if not isinstance(better, dict):
            continue
        kept: dict[str, Any] = {"better": better}
        controls = controls_of(task)
        for path, value in _leaves(metrics):
            ranked = ".".join(path) in better
            control = path[0] in controls and ".".join(path[1:]) in better
            if ranked or control:
                node = kept
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = value
        info["eval"][f"{part}: {task}"] = kept
    nll = downstream["val"].get("bits_per_code")
    if nll is not None:
        info["eval"][f"{part}: validation"] = {"bits_per_code": nll, "better": {"bits_per_code": "lower"}}


def _leaves(metrics: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    """(key path, number) of every number in nested results (keys may contain dots: ``acc@0.5``)."""
    if isinstance(metrics, dict):
        found = []
        for key, value in metrics.items():
            if not (path == () and key == "better"):
                found += _leaves(value, (*path, str(key)))
        return found
    if isinstance(metrics, (int, float)) and not isinstance(metrics, bool):
        return [(path, metrics)]
    return []


def _finish(run: PlannedRun, outcome: RunOutcome, state: ComparisonState, prefix: str, say) -> None:
    if outcome.stop_reason != "max_steps":
        raise ComparisonInterrupted(
            f"{prefix} stopped ({outcome.stop_reason}) in {outcome.run_dir}; finished runs are kept in "
            f"{state.path}: run the same command again to go on (add --resume to continue this run "
            "from its last checkpoint)"
        )
    state.record(run, outcome)
    say(f"{prefix}: done in {outcome.seconds:.0f} s ({outcome.run_dir})")


def _run_parallel(todo, total, state, resume, runner, jobs, threads, say) -> None:
    """Runs in ``jobs`` processes (spawned: no forked torch state), ``threads`` torch threads each."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending = {}
        for index, run in todo:
            prefix = _prefix(index, total, run)
            spec = _prepare(run, state, resume, lambda m, p=prefix: say(f"{p}: {m}"))
            spec = RunSpec(**{**asdict(spec), "threads": threads})
            log_file = Path(spec.output_dir) / f"{run.run_name}.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            say(f"{prefix}: queued ({threads} thread(s); log {log_file})")
            pending[pool.submit(_run_logged, runner, spec, str(log_file))] = (prefix, run)
        interrupted: ComparisonInterrupted | None = None
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    prefix, run = pending.pop(future)
                    try:
                        _finish(run, future.result(), state, prefix, say)
                    except ComparisonInterrupted as exc:
                        interrupted = interrupted or exc
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
            raise
        if interrupted is not None:
            raise interrupted


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _context(file, overrides, seed_count, jobs, entries, started) -> dict[str, str]:
    """Command, machine and time: what a reader needs to judge and repeat the table."""
    command = f"lgvq compare {file}" + "".join(f" --set {o}" for o in overrides)
    if seed_count is not None:
        command += f" --seeds {seed_count}"
    if jobs > 1:
        command += f" --jobs {jobs}"
    threads = sorted({str(e.get("threads")) for e in entries if e.get("threads")})
    training = sum(float(e.get("seconds", 0.0)) for e in entries)
    cpu = [e.get("cpu_seconds") for e in entries]
    cpu_words = (
        f" ({_duration(sum(float(c) for c in cpu))} of CPU time)"
        if cpu and all(isinstance(c, (int, float)) for c in cpu)
        else " (CPU time not recorded for every run)"
    )
    elapsed = time.perf_counter() - started
    return {
        "Command": f"`{command}`",
        "Machine": f"{cpu_model()}, {os.cpu_count()} cores, {'/'.join(threads) or '?'} torch thread(s) per run, "
        f"{jobs} run(s) at a time; {platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "Time": f"{len(entries)} runs took {_duration(training)} of training and evaluation in total{cpu_words}; "
        f"this invocation {_duration(elapsed)}",
    }
