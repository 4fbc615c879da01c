"""``lgvq export RUN_DIR --format NAME OUT``: a trained tokenizer written in another format.

Each format is an ``exporter`` component (``lgvq list exporter``). Its factory returns an object with

* ``check(config)``: raise :class:`~lgvq_core.errors.ExportError` when the run file's tokenizer
  cannot be written in the format (called before any weights are read);
* ``export(source, out_dir, log)``: write the :class:`ExportSource` into ``out_dir``, an empty folder.

This module resolves the run and its checkpoint, hands them to the exporter and makes OUT appear at
once: the exporter writes into a staging folder beside OUT, renamed to OUT only when it returns, so
a refusal or a crash leaves no half-written OUT. A non-empty OUT is refused before anything is read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgvq_core import __version__
from lgvq_core.atomic import fsync_dir
from lgvq_core.config.overrides import option_pairs
from lgvq_core.config.schema import DownstreamRunFile
from lgvq_core.context import BuildContext
from lgvq_core.contracts import require_methods
from lgvq_core.errors import ExportError, RunDirError
from lgvq_core.registry import get_registry
from lgvq_core.runner.load import LoadedTokenizer, load_tokenizer_run, read_run_file


@dataclass(frozen=True)
class ExportSource:
    """A trained tokenizer as an exporter receives it: loaded (frozen, eval mode, on the CPU), with the
    run file it trained with and what identifies it."""

    #: encode/embed/decode and ``module`` (the backbone, a :class:`lgvq_core.tokenizer.Tokenizer`).
    tokenizer: LoadedTokenizer
    #: The validated run file (``config.model.backbone.type``, ``.config``, ``config.model.quantizer``).
    config: Any
    #: The run's ``resolved.toml`` as written: every default filled in.
    run_file_text: str
    run_dir: Path
    #: ``eval/<task>.json`` records of the run directory by task name (``step``, ``metrics``, ...).
    evaluation: dict[str, dict] = field(default_factory=dict)
    #: Who provides the backbone and the quantizer: ``{"backbone": {"name", "distribution", "version"}, ...}``.
    providers: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.tokenizer.step

    def provenance(self) -> dict[str, Any]:
        """Where the weights come from, for a model card or a metadata file."""
        return {
            "run_dir": str(self.run_dir.resolve()),
            "checkpoint": str(Path(self.tokenizer.checkpoint).resolve()),
            "checkpoint_sha256": self.tokenizer.sha256,
            "step": self.step,
            "lgvq_version": __version__,
            "providers": self.providers,
        }


def check_out_dir(out: Path) -> None:
    """Refuse an OUT that is a file or a folder with something in it (nothing is overwritten)."""
    if out.is_file() or out.is_symlink():
        raise ExportError(f"{out}: exists and is not a folder; give a new folder to write")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out}: folder is not empty; give a new or empty folder (nothing is overwritten)")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent}: folder does not exist; create it first")


def read_evaluation(run_dir: Path) -> dict[str, dict]:
    """The run's ``eval/*.json`` records by task name (unreadable ones are skipped)."""
    found: dict[str, dict] = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("task"), str):
            found[record["task"]] = record
    return found


def _providers(config: Any) -> dict[str, dict[str, str]]:
    registry = get_registry()
    found = {}
    for kind, component in (("backbone", config.model.backbone), ("quantizer", config.model.quantizer)):
        if component is not None:
            entry = registry.get(kind, component.type)
            found[kind] = {"name": component.type, "distribution": entry.distribution, "version": entry.version}
    return found


def build_exporter(format_name: str, options: Mapping[str, Any] | None, log: Callable[[str], None]) -> Any:
    """The exporter component ``format_name`` with ``options`` (its config class's fields)."""
    table = {**dict(options or {}), "type": format_name}
    return get_registry().build("exporter", table, "export", BuildContext(log=log))


def _commit(staging: Path, out: Path) -> None:
    """Make the staging folder OUT: its files are synced, then it is renamed in one step."""
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
        fsync_dir(folder)
    if out.is_dir():
        out.rmdir()  # empty (checked before): rename cannot replace a folder on every platform
    os.replace(staging, out)
    fsync_dir(out.parent)


def export_tokenizer(
    run_dir: str | Path,
    format_name: str,
    out: str | Path,
    checkpoint: str = "best",
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write the tokenizer of ``run_dir`` (its ``checkpoint``) as ``format_name`` into the new folder ``out``.

    Returns the files written, under ``out``.
    """
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    check_out_dir(out)
    exporter = build_exporter(format_name, options, log)
    loaded = read_run_file(run_dir)
    if isinstance(loaded.config, DownstreamRunFile):
        raise RunDirError(
            f"{run_dir}: a downstream run (a model trained on frozen codes), not a tokenizer run; export the run "
            "directory of its tokenizer (its resolved.toml names it under [tokenizer])"
        )
    exporter.check(loaded.config)
    run = load_tokenizer_run(run_dir, checkpoint, "cpu", log)
    source = ExportSource(
        tokenizer=LoadedTokenizer(run),
        config=run.config,
        run_file_text=(run_dir / "resolved.toml").read_text(encoding="utf-8"),
        run_dir=run_dir,
        evaluation=read_evaluation(run_dir),
        providers=_providers(run.config),
    )
    staging = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        exporter.export(source, staging, log)
        _commit(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(p for p in out.rglob("*") if p.is_file())


def export_from_cli(args: argparse.Namespace) -> int:
    written = export_tokenizer(
        args.run_dir, args.format, args.out, args.checkpoint, option_pairs(list(args.set or []), "verify=false"), print
    )
    out = Path(args.out)
    print(f"wrote {out} ({args.format}):")
    for path in written:
        print(f"  {path.relative_to(out)}  ({path.stat().st_size} bytes)")
    return 0


def check_exporter(exporter: Any) -> None:
    """The exporter contract: ``check(config)`` and ``export(source, out_dir, log)``."""
    require_methods(exporter, "an exporter", {"check": ("config",), "export": ("source", "out_dir", "log")})
