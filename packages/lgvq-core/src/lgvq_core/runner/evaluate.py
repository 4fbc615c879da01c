"""``lgvq eval``: load a trained tokenizer from its run directory and run tasks on the val split.

Each task writes ``eval/<task>.json`` (metrics) and may write pictures next to it; a table of
every task's headline numbers is printed at the end.

Under ``torchrun`` every rank loads the model; a task that shards its split (``shards_split``)
walks one slice per rank and syncs its metrics, the others run on rank 0 alone. Rank 0 writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from lgvq_core.atomic import write_json_atomic
from lgvq_core.config.describe import unstructure
from lgvq_core.config.downstream import is_downstream
from lgvq_core.config.loader import LoadedRunFile, parse_toml
from lgvq_core.config.schema import Component
from lgvq_core.config.walker import structure_component
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError, RunDirError
from lgvq_core.registry import get_registry
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner import distributed as distr
from lgvq_core.runner.components import build_components
from lgvq_core.runner.downstream_run import load_downstream_run
from lgvq_core.runner.load import read_checkpoint, read_run_file
from lgvq_core.tasks import EvalShard, TrainedModel, refusal


def load_trained(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str | None = None,
    overrides: list[str] | None = None,
) -> tuple[TrainedModel, Any, LoadedRunFile]:
    """Rebuild a run's tokenizer (and alignment heads) and load a checkpoint; returns the val split too.

    Under ``torchrun`` this joins the process group and the model's ``shard`` is this rank's.
    """
    run_dir = Path(run_dir)
    overrides = list(overrides or [])
    if device:
        overrides.append(f"run.device={device}")
    loaded = read_run_file(run_dir, overrides)
    config = loaded.config
    read = read_checkpoint(run_dir, checkpoint)
    info = distr.init_distributed(config.run.device)
    torch_device = distr.resolve_device(config.run.device, info)
    parts = build_components(config, torch_device, log=lambda m: print(m, flush=True))
    tokenizer = parts.tokenizer
    ckpt.load_module(tokenizer, read.tensors, "tokenizer", read.path)
    alignment = parts.alignment
    if alignment is not None:
        ckpt.load_module(alignment, read.tensors, "alignment", read.path)
        alignment = alignment.to(torch_device).eval()
    model = TrainedModel(
        tokenizer=tokenizer.to(torch_device).eval(),
        alignment=alignment,
        text_encoder=parts.text_encoder,
        text_cache=parts.text_cache,
        device=torch_device,
        config=config,
        run_dir=run_dir,
        step=read.step,
        batch_size=config.train.batch_size,
        train_data=parts.train_data,
        shard=EvalShard(rank=info.rank, count=info.world_size),
    )
    return model, parts.val_data, loaded


def task_components(loaded: LoadedRunFile, names: list[str] | None) -> list[tuple[str, Component]]:
    """The run file's ``[[tasks]]``, or the named tasks (a named task uses its run-file options if present)."""
    configured = {c.type: (f"$.tasks[{i}]", c) for i, c in enumerate(loaded.config.tasks)}
    if not names:
        return [(path, c) for path, c in configured.values()]
    registry = get_registry()
    chosen = []
    for name in names:
        canonical = registry.get_spec("task", name, "--tasks").name
        if canonical in configured:
            chosen.append(configured[canonical])
        else:
            chosen.append(("--tasks", structure_component("task", {"type": canonical}, "--tasks", registry=registry)))
    return chosen


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_tasks(model: TrainedModel, data: Any, tasks: list[tuple[str, Component]], out_dir: Path) -> dict[str, Any]:
    """Run each task on ``data``; write ``out_dir/<task>.json``; return every task's metrics.

    With a sharded ``model`` (under ``torchrun``), a task with ``shards_split`` runs on every rank,
    each on its slice; any other task runs on rank 0 alone (the other ranks wait for it in the next
    collective, within the process group's timeout). Only rank 0 writes and returns results.

    Every task is asked first whether it can serve this model (its ``requires``); a refused task
    does no work, the others run, and its entry is ``{"refused": reason}``.
    """
    registry = get_registry()
    main = model.shard.rank == 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    context = BuildContext(device=str(model.device), seed=model.config.run.seed, text_encoder=model.text_encoder)
    built = [(component, registry.build("task", component, path, context)) for path, component in tasks]
    refused = {component.type: refusal(task, model) for component, task in built}
    for name, reason in refused.items():
        if reason and main:
            print(f"task {name}: refused: {reason}", flush=True)
    for component, task in built:
        record: dict[str, Any] = {"task": component.type, "step": model.step, "options": unstructure(component.config)}
        if refused[component.type]:
            if main:
                results[component.type] = {"refused": refused[component.type]}
                write_json_atomic(out_dir / f"{component.type}.json", {**record, "refused": refused[component.type]})
            continue
        sharded = model.shard.sharded and getattr(task, "shards_split", False)
        if not sharded and not main:
            continue
        task_model = model if sharded else dataclasses.replace(model, shard=EvalShard())
        if main:
            ways = f", {model.shard.count} processes" if sharded else ""
            print(f"task {component.type}: running on {len(data)} validation items{ways}", flush=True)
        metrics = task.run(task_model, data, out_dir / component.type)
        if not main:
            continue
        metrics = _json_safe(metrics)
        write_json_atomic(out_dir / f"{component.type}.json", {**record, "metrics": metrics})
        results[component.type] = metrics
    return results


def format_table(results: dict[str, Any]) -> str:
    rows = []
    for task, metrics in results.items():
        if isinstance(metrics, dict) and set(metrics) == {"refused"}:
            rows.append((task, "refused", str(metrics["refused"])))
            continue
        for key, value in _flatten(metrics):
            rows.append((task, key, f"{value:.4g}" if isinstance(value, float) else str(value)))
    if not rows:
        return "(no metrics)"
    widths = [max(len(r[i]) for r in rows + [("task", "metric", "value")]) for i in range(3)]
    lines = [f"{'task':<{widths[0]}}  {'metric':<{widths[1]}}  value", "-" * (sum(widths) + 4)]
    lines += [f"{t:<{widths[0]}}  {k:<{widths[1]}}  {v}" for t, k, v in rows]
    return "\n".join(lines)


def _flatten(metrics: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(metrics, dict):
        out = []
        for key, value in metrics.items():
            out += _flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
        return out
    if isinstance(metrics, (int, float)) and not isinstance(metrics, bool):
        return [(prefix.rstrip("."), metrics)]
    if isinstance(metrics, str) and metrics.startswith(NOTES):
        return [(prefix.rstrip("."), metrics)]  # a number that could not be computed says why, in its row
    return []


#: How a task words a number it could not compute; such values get their row in the console table.
NOTES = ("unavailable", "not measured", "not computed", "absent", "not requested")


def evaluate_in_process(run, checkpoint: str = "best") -> dict[str, Any]:
    """The run file's ``[[tasks]]`` at the end of ``lgvq run`` (rank 0).

    The tasks see the weights of ``checkpoint`` (``best``, falling back to ``last``), the same
    checkpoint ``lgvq eval`` uses by default, so both give the same numbers. The run is over, so
    the weights are loaded into the run's own modules.
    """
    path = ckpt.resolve_checkpoint(run.run_dir, checkpoint)
    tensors, state = ckpt.load_checkpoint(path, map_location="cpu")
    for prefix, module in run.saved_modules().items():
        if module is not None and prefix != "discriminator":
            ckpt.load_module(module, tensors, prefix, path, state.get("extra_states"))
    run.step = int(state.get("step", run.step))
    model = trained_model(run)
    tasks = [(f"$.tasks[{i}]", c) for i, c in enumerate(run.config.tasks)] + earlier_tasks(run.run_dir, run.config)
    print(f"evaluating {path.name} ({checkpoint})", flush=True)
    with torch.no_grad():
        results = run_tasks(model, run.val_data, tasks, run.run_dir / "eval")
    print(format_table(results), flush=True)
    return results


def trained_model(run) -> TrainedModel:
    """What a task sees of a finished run, in eval mode (the run kind says what that is)."""
    run.model.eval()
    return run.run_kind.trained_model(run)


def earlier_tasks(run_dir: Path, config: Any) -> list[tuple[str, Component]]:
    """Tasks with a result in ``eval/`` that the run file does not list (``lgvq eval --tasks``), with the
    options they ran with: after a resume they are evaluated again, so that every file in ``eval/``
    describes the same checkpoint."""
    registry = get_registry()
    listed = {c.type for c in config.tasks}
    found = []
    for result in sorted((Path(run_dir) / "eval").glob("*.json")):
        try:
            record = json.loads(result.read_text())
            name = record["task"]
        except (ValueError, KeyError, TypeError):
            continue
        if name in listed or name not in registry.list_components("task"):
            continue
        table = {"type": name, **(record.get("options") or {})}
        found.append(
            (f"eval/{result.name}", structure_component("task", table, f"eval/{result.name}", registry=registry))
        )
    return found


def eval_from_cli(args: argparse.Namespace) -> int:

    resolved = Path(args.run_dir) / "resolved.toml"
    if resolved.is_file():
        try:
            text = resolved.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{resolved}: cannot be read ({exc}); it is not the run file `lgvq run` wrote") from None
        try:
            downstream = is_downstream(parse_toml(text))
        except ConfigError as exc:
            problem = exc.problems[0].removeprefix("$: ")
            raise RunDirError(f"{resolved}: {problem}; it is not the run file `lgvq run` wrote") from None
    else:
        downstream = False
    if downstream:
        if args.set:
            raise ConfigError(["--set: not supported for a downstream run's evaluation; edit the task options instead"])
        if distr.launched_by_torchrun():
            raise ConfigError(
                ["torchrun: a downstream run's evaluation is not sharded; run `lgvq eval` without torchrun"]
            )
        run = load_downstream_run(args.run_dir, args.checkpoint, args.device)
        model, data, loaded = trained_model(run), run.val_data, run.loaded
    else:
        model, data, loaded = load_trained(args.run_dir, args.checkpoint, args.device, args.set)
    tasks = task_components(loaded, args.tasks)
    if not tasks:
        raise ConfigError(["$.tasks: the run file has no [[tasks]]; name some with --tasks (see `lgvq list task`)"])
    try:
        results = run_tasks(model, data, tasks, Path(args.run_dir) / "eval")
        if model.shard.count > 1:  # the ranks leave the process group together, not while one still sends
            torch.distributed.barrier()
    finally:
        distr.shutdown_distributed()
    if model.shard.rank == 0:
        print(format_table(results))
        print(f"wrote {len(results)} result file(s) to {Path(args.run_dir) / 'eval'}")
    return 0


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """Every ``eval/<task>.json`` of a run directory."""
    out = {}
    for path in sorted((Path(run_dir) / "eval").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunDirError(
                f"{path}: not a task result ({reason}); run `lgvq eval {run_dir}` to write it again"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("metrics", {}), dict):
            raise RunDirError(
                f"{path}: not a task result (expected a table with a 'metrics' table); "
                f"run `lgvq eval {run_dir}` to write it again"
            )
        out[path.stem] = record.get("metrics", {"refused": record.get("refused", "")})
    return out
