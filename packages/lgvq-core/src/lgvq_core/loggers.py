"""Experiment trackers (``[[loggers]]``): what a logger receives, and the set that feeds them.

``metrics.jsonl`` is the record of a run; a logger mirrors it into a tracker (TensorBoard, MLflow,
a plugin's own). The runner builds the run file's ``[[loggers]]`` on rank 0 only and hands each:

- :meth:`Logger.start`: once per process, with the resolved run file flattened to
  hyperparameters and the state the logger returned when the run last started (a resume attaches
  to the same tracker run);
- :meth:`Logger.log_metrics`: every line written to ``metrics.jsonl`` (``split`` ``"train"`` or
  ``"val"``), in order;
- :meth:`Logger.log_picture`: every PNG the run writes under ``samples/`` and ``eval/``;
- :meth:`Logger.log_results`: the final task numbers (``<task>/<metric>``);
- :meth:`Logger.finish`: ``"FINISHED"``, ``"KILLED"`` (a signal) or ``"FAILED"``.

A logger that raises is reported once, with what to do, and switched off; training goes on and
nothing the run saved is touched. Which steps and pictures each logger has received is kept in
``loggers.json`` in the run directory, so that a resumed run sends a tracker each line once: lines
the tracker already has are skipped, lines it missed (it failed, or the process died before it
was told) are sent from ``metrics.jsonl`` when the run resumes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from lgvq_core.atomic import write_json_atomic
from lgvq_core.context import BuildContext
from lgvq_core.contracts import ContractError, require_methods
from lgvq_core.registry import get_registry

#: The run directory's file of what each logger has received.
STATE_FILE = "loggers.json"
#: Folders of the run directory whose pictures are sent to the loggers.
PICTURE_FOLDERS = ("samples", "eval")
_STEP_NAME = re.compile(r"step-(\d+)$")


@attrs.frozen
class LoggerRun:
    """What a logger is told when a run starts."""

    #: The run directory (``metrics.jsonl`` and the pictures are there).
    run_dir: Path
    #: ``run.name`` of the run file.
    name: str
    #: The folder runs of this run file are created in (``run.output_dir``).
    output_dir: Path
    #: The resolved run file, flattened: ``{"model.quantizer.codebook_size": 256, ...}``.
    hyperparameters: dict[str, Any]
    #: The step the run starts at (0, or the checkpoint's step on a resume).
    step: int
    #: What :meth:`Logger.start` returned when this run directory last started (``None``: first start).
    previous_state: dict[str, Any] | None


@runtime_checkable
class Logger(Protocol):
    """What a ``[[loggers]]`` component's factory returns. Every method may raise: the runner
    reports the error once and stops calling this logger."""

    def start(self, run: LoggerRun) -> dict[str, Any]:
        """Open (or re-open, from ``run.previous_state``) the tracker run; log the hyperparameters.

        :returns: JSON-able state to hand back on the next start of this run directory (an MLflow
            run id), ``{}`` when there is none.
        """
        ...

    def log_metrics(self, metrics: dict[str, float], step: int, split: str) -> None:
        """One ``metrics.jsonl`` line: its finite numbers (``split`` is ``"train"`` or ``"val"``)."""
        ...

    def log_picture(self, path: Path, name: str, step: int) -> None:
        """A PNG the run wrote; ``name`` is its place in the run directory without the step
        (``samples``, ``eval/reconstruction/grid``)."""
        ...

    def log_results(self, results: dict[str, float], step: int) -> None:
        """The final task numbers, ``{"reconstruction/psnr": 27.9, ...}``."""
        ...

    def finish(self, status: str) -> None:
        """Close the tracker run: ``"FINISHED"``, ``"KILLED"`` or ``"FAILED"``."""
        ...


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables -> ``{"a.b.c": scalar}``; lists of tables are indexed (``alignment.0.type``),
    lists of scalars become their JSON text; ``None`` becomes ``"none"``."""
    flat: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            flat.update(flatten_config(item, f"{prefix}{key}."))
        return flat
    name = prefix.rstrip(".")
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(item, Mapping) for item in value):
            for i, item in enumerate(value):
                flat.update(flatten_config(item, f"{prefix}{i}."))
            return flat
        return {name: json.dumps(list(value))}
    if value is None:
        return {name: "none"}
    if isinstance(value, (bool, int, float, str)):
        return {name: value}
    return {name: str(value)}


def finite_numbers(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line, without its ``step`` and ``split``."""
    return {
        key: float(value)
        for key, value in record.items()
        if key not in ("step", "split")
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def flatten_results(results: Mapping[str, Any]) -> dict[str, float]:
    """Task results ``{task: {metric: value | {…}}}`` -> ``{"task/metric": value}``, numbers only."""
    flat: dict[str, float] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{name}/{key}" if name else str(key))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)

    walk(results, "")
    return flat


def picture_name(relative: Path, step: int) -> tuple[str, int]:
    """``samples/step-0000100.png`` -> ``("samples", 100)``; ``eval/x/grid.png`` -> ``("eval/x/grid", step)``."""
    stem = relative.with_suffix("")
    match = _STEP_NAME.fullmatch(stem.name)
    if match:
        parent = stem.parent.as_posix()
        return (parent if parent != "." else "samples"), int(match.group(1))
    return stem.as_posix(), step


@attrs.define
class _Entry:
    key: str
    kind: str
    logger: Any
    state: dict[str, Any] = attrs.field(factory=dict)
    active: bool = True


class RunLoggers:
    """The run file's loggers on rank 0: each call guarded, progress kept in ``loggers.json``.

    :param loggers: ``(type name, logger)`` in run-file order.
    :param log: where the one-line failure reports go (the run's log).
    """

    def __init__(self, loggers: list[tuple[str, Any]], run_dir: Path, log: Callable[[str], None]) -> None:
        self.run_dir = Path(run_dir)
        self.log = log
        self.step = 0
        self.entries = [
            _Entry(
                key=f"{i}-{kind}",
                kind=kind,
                logger=logger,
            )
            for i, (kind, logger) in enumerate(loggers)
        ]
        self._saved: dict[str, Any] = self._read_state()
        self._reported: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.entries)

    # ------------------------------------------------------------------ state
    def _read_state(self) -> dict[str, Any]:
        path = self.run_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self) -> None:
        data = {entry.key: entry.state for entry in self.entries}
        try:
            write_json_atomic(self.run_dir / STATE_FILE, data)
        except OSError as exc:  # a full disk stops the run elsewhere; a logger's bookkeeping never does
            self._report_once("loggers", f"could not record the loggers' progress in {STATE_FILE}: {exc}")

    def _report_once(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.log(message)

    def _call(self, entry: _Entry, what: str, method: str, *args: Any) -> Any:
        if not entry.active:
            return None
        try:
            return getattr(entry.logger, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker never stops or corrupts the run
            entry.active = False
            said = str(getattr(entry.logger, "advice", "") or "")  # what to do, as the logger knows it now
            advice = f" {said}" if said else ""
            self._report_once(
                entry.key,
                f"warning: logger {entry.kind!r} ([[loggers]] #{entry.key.split('-')[0]}) failed while {what} at step "
                f"{self.step}: {type(exc).__name__}: {exc}. It is off for the rest of this process; training goes on "
                f"and metrics.jsonl keeps every number.{advice} A `lgvq run --resume` of this run sends the tracker "
                "what it missed.",
            )
            return None

    # ------------------------------------------------------------------ the run
    def start(self, run: LoggerRun, records: list[dict[str, Any]]) -> None:
        """Start every logger; on a resume, send each the lines of ``records`` (``metrics.jsonl``,
        already cut back to the checkpoint) and the pictures it has not received."""
        self.step = run.step
        for entry in self.entries:
            previous = self._saved.get(entry.key)
            if isinstance(previous, dict) and previous.get("kind") == entry.kind:
                entry.state = previous
            else:
                entry.state = {"kind": entry.kind}
            given = attrs.evolve(run, previous_state=entry.state.get("logger"))
            state = self._call(entry, "starting", "start", given)
            if entry.active:
                entry.state["logger"] = dict(state or {})
        for record in records:
            self.metrics(record, save=False)
        self.pictures(save=False)
        self._write_state()

    def metrics(self, record: Mapping[str, Any], save: bool = True) -> None:
        """A line just written to ``metrics.jsonl``."""
        try:
            step = int(record.get("step", 0))
        except (TypeError, ValueError):
            return
        split = str(record.get("split", "train"))
        self.step = max(self.step, step)
        numbers = finite_numbers(record)
        changed = False
        for entry in self.entries:
            sent = entry.state.setdefault("sent", {})
            if not entry.active or step <= int(sent.get(split, -1)):
                continue  # the tracker has it already (a resumed run re-runs steps it logged)
            self._call(entry, f"logging the {split} metrics", "log_metrics", numbers, step, split)
            if entry.active:
                sent[split] = step
                changed = True
        if changed and save:
            self._write_state()

    def pictures(self, save: bool = True) -> None:
        """Send the PNGs under ``samples/`` and ``eval/`` that a logger has not received yet."""
        found = []
        for folder in PICTURE_FOLDERS:
            root = self.run_dir / folder
            if root.is_dir():
                found += sorted(p for p in root.rglob("*.png") if p.is_file())
        changed = False
        for entry in self.entries:
            if not entry.active:
                continue
            done = set(entry.state.setdefault("pictures", []))
            for path in found:
                relative = path.relative_to(self.run_dir)
                key = relative.as_posix()
                if key in done:
                    continue
                name, step = picture_name(relative, self.step)
                self._call(entry, f"logging the picture {key}", "log_picture", path, name, step)
                if not entry.active:
                    break
                done.add(key)
                changed = True
            entry.state["pictures"] = sorted(done)
        if changed and save:
            self._write_state()

    def results(self, results: Mapping[str, Any], step: int) -> None:
        """The run file's ``[[tasks]]`` numbers, and the pictures they drew."""
        flat = flatten_results(results)
        if flat:
            for entry in self.entries:
                self._call(entry, "logging the task results", "log_results", flat, step)
        self.pictures()

    def finish(self, status: str) -> None:
        for entry in self.entries:
            self._call(entry, "closing", "finish", status)
        self._write_state()


def build_loggers(config: Any, registry: Any = None) -> list[tuple[str, Any]]:
    """The run file's ``[[loggers]]`` as ``(type, logger)``, built through the registry before the
    run directory is written (a logger whose package is missing stops the run before it starts)."""
    registry = registry or get_registry()
    return [
        (component.type, registry.build("logger", component, f"$.loggers[{i}]", BuildContext(device="cpu")))
        for i, component in enumerate(config.loggers)
    ]


#: The logger contract: method -> positional parameters.
LOGGER_METHODS: dict[str, tuple[str, ...]] = {
    "start": ("run",),
    "log_metrics": ("metrics", "step", "split"),
    "log_picture": ("path", "name", "step"),
    "log_results": ("results", "step"),
    "finish": ("status",),
}
#: A 1×1 PNG: what a logger is handed as a picture in the contract check.
_PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000000301"
    "0100c9fe92ef0000000049454e44ae426082"
)


def check_logger(logger: Any) -> None:
    """The logger contract, exercised in a temporary run directory: every method takes what the runner
    hands it, ``start`` returns JSON-able state, and a second ``start`` with that state (a resume) works."""
    import tempfile

    require_methods(logger, "a logger", LOGGER_METHODS)
    with tempfile.TemporaryDirectory(prefix="lgvq-logger-contract-") as folder:
        run_dir = Path(folder) / "runs" / "contract" / "run"
        (run_dir / "samples").mkdir(parents=True)
        picture = run_dir / "samples" / "step-0000001.png"
        picture.write_bytes(_PIXEL)
        run = LoggerRun(
            run_dir=run_dir,
            name="contract",
            output_dir=Path(folder) / "runs",
            hyperparameters={"model.quantizer.codebook_size": 8, "model.backbone.type": "tiny", "train.ema": True},
            step=0,
            previous_state=None,
        )
        state = logger.start(run)
        try:
            json.dumps(state)
        except TypeError as exc:
            raise ContractError(f"a logger's start must return JSON-able state; got {state!r} ({exc})") from None
        logger.log_metrics({"loss": 1.0, "rec_loss": 0.5}, 1, "train")
        logger.log_metrics({"psnr": 20.0}, 1, "val")
        logger.log_picture(picture, "samples", 1)
        logger.log_results({"reconstruction/psnr": 20.0}, 1)
        logger.finish("FINISHED")
        again = attrs.evolve(run, step=1, previous_state=state or {})
        logger.start(again)
        logger.log_metrics({"loss": 0.9}, 2, "train")
        logger.finish("FINISHED")


__all__ = [
    "Logger",
    "LoggerRun",
    "RunLoggers",
    "build_loggers",
    "check_logger",
    "flatten_config",
    "flatten_results",
    "picture_name",
]
