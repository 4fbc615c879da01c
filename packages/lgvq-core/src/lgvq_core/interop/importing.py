"""``lgvq import FORMAT CHECKPOINT OUT_RUN_DIR``: another project's checkpoint as an lgvq run directory.

The importer (a plugin, kind ``importer``) reads the checkpoint and its config and hands back an
:class:`~lgvq_core.interop.records.ImportedCheckpoint`: a run file and the weights under lgvq's
names. This module holds it to the model that run file builds -- every weight present, every shape
equal, nothing unknown -- and writes the run directory the way ``lgvq run`` does (``config.toml``,
``resolved.toml``, ``tokenizer-build.json``, a verified ``checkpoints/last``), plus ``import.json``
with the account of every source key. The directory is written under a temporary name and renamed
into place, so it is complete or absent.

The result loads wherever a trained run does: ``lgvq eval``, :func:`lgvq_core.api.load_tokenizer`,
a downstream run's ``[tokenizer] run_dir``, and ``train.init_from`` of a new tokenizer run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgvq_core.atomic import write_json_atomic
from lgvq_core.config.describe import dumps_toml
from lgvq_core.config.loader import LoadedRunFile, validate
from lgvq_core.config.overrides import option_pairs
from lgvq_core.context import BuildContext
from lgvq_core.errors import CheckpointError, RunDirError
from lgvq_core.interop.records import ImportedCheckpoint
from lgvq_core.registry import get_registry
from lgvq_core.runner import optim
from lgvq_core.runner.checkpoint import model_tensors, save_checkpoint
from lgvq_core.runner.load import build_tokenizer, write_build_record
from lgvq_core.runner.reporting import used_components
from lgvq_core.runner.rundir import environment_report, write_run_files

#: The account of an import, next to its checkpoints.
REPORT_FILE = "import.json"


@dataclass
class ImportResult:
    run_dir: Path
    imported: ImportedCheckpoint
    #: lgvq key -> source key, for the weights written.
    taken: dict[str, str]


def _options(args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {"type": args.format, **option_pairs(args.set or [], "discriminator=false")}
    if args.config is not None:
        table["config"] = args.config
    return table


def import_from_cli(args: argparse.Namespace) -> int:
    result = import_checkpoint(_options(args), args.checkpoint, args.out, log=print)
    print(format_report(result))
    return 0


def _refuse_existing(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{out}: exists and is not an empty directory; give a new OUT_RUN_DIR (nothing was written)")


def import_checkpoint(
    options: dict[str, Any], checkpoint: str | Path, out: str | Path, log: Callable[[str], None] = print
) -> ImportResult:
    """Convert ``checkpoint`` with the importer ``options["type"]`` and write the run directory ``out``."""
    out = Path(out).expanduser()
    _refuse_existing(out)
    registry = get_registry()
    importer = registry.build("importer", options, "lgvq import", BuildContext(log=log))
    imported = importer.convert(checkpoint)
    loaded = validate(imported.run_file, registry=registry, source=f"{out}/config.toml")
    sizes = {"image_size": imported.image_size, "in_channels": imported.in_channels}
    tokenizer = build_tokenizer(loaded.config, "cpu", log, sizes)
    modules: dict[str, nn.Module | None] = {"tokenizer": tokenizer, "discriminator": None}
    if any(key.startswith("discriminator.") for key in imported.weights):
        modules["discriminator"] = tokenizer.make_discriminator()
    load_weights(imported, modules, Path(checkpoint))
    tensors = model_tensors(modules)
    _write_run_dir(out, imported, loaded, tensors, log)
    return ImportResult(run_dir=out, imported=imported, taken=dict(imported.sources))


def load_weights(imported: ImportedCheckpoint, modules: dict[str, nn.Module | None], source: Path) -> None:
    """Load the imported weights into ``modules`` strictly: a shape that differs, a weight the model lacks
    or one it has that nothing fills (and is not in ``kept_initial``) refuses the import, naming the keys."""
    expected: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        if module is not None:
            expected.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    problems = []
    for key, tensor in imported.weights.items():
        origin = imported.sources.get(key, key)
        if key not in expected:
            problems.append(f"{origin} -> {key}: the lgvq model has no such weight")
        elif tuple(tensor.shape) != tuple(expected[key].shape):
            problems.append(
                f"{origin}: shape {tuple(tensor.shape)} in the checkpoint, {tuple(expected[key].shape)} in the "
                f"lgvq model ({key}) built from the config"
            )
    missing = [k for k in expected if k not in imported.weights and k not in imported.kept_initial]
    if missing:
        problems.append(
            f"{len(missing)} weight(s) of the lgvq model found in no checkpoint key: {', '.join(missing[:6])}"
            f"{', ...' if len(missing) > 6 else ''}"
        )
    if problems:
        raise CheckpointError(
            f"{source}: the weights do not fit the model its config describes ("
            + "; ".join(problems[:6])
            + ("; ..." if len(problems) > 6 else "")
            + "); is --config the config this checkpoint was trained with?"
        )
    for prefix, module in modules.items():
        if module is None:
            continue
        own = {k[len(prefix) + 1 :]: v for k, v in imported.weights.items() if k.startswith(prefix + ".")}
        module.load_state_dict(own, strict=False)  # every key and shape was checked above


def _write_run_dir(
    out: Path,
    imported: ImportedCheckpoint,
    loaded: LoadedRunFile,
    tensors: dict[str, torch.Tensor],
    log: Callable[[str], None],
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.import-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        (tmp / "samples").mkdir()
        source = imported.source
        header = (
            f"# Imported by `lgvq import {source.get('format', '?')}` from {source.get('checkpoint', '?')}\n"
            f"# (config: {source.get('config', '?')}). The [data] table is a stand-in at the model's resolution:\n"
            "# evaluate on your data with `lgvq eval RUN_DIR --set data.type=... --set data.root=...`.\n\n"
        )
        plugins = get_registry().report()
        plugins["components"] = used_components(loaded.config)
        write_run_files(
            tmp,
            header + dumps_toml(imported.run_file),
            loaded.config,
            [],
            optim.effective_lr(loaded.config.train, 1),
            plugins,
            environment_report("cpu", 1),
        )
        write_build_record(tmp, imported.image_size, imported.in_channels)
        state = {"imported": _json_safe(source), "extra_states": {}}
        save_checkpoint(tmp / "checkpoints", imported.step, tensors, state, ["last"])
        write_json_atomic(tmp / REPORT_FILE, _report_record(imported))
        if out.exists():
            out.rmdir()  # empty (checked before anything was read)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _report_record(imported: ImportedCheckpoint) -> dict[str, Any]:
    return {
        "source": _json_safe(imported.source),
        "taken": {imported.sources[k]: k for k in sorted(imported.sources)},
        "ignored": dict(sorted(imported.ignored.items())),
        "kept_initial": dict(sorted(imported.kept_initial.items())),
        "config_without_lgvq_equivalent": dict(sorted(imported.unmapped_config.items())),
    }


def _group(key: str) -> str:
    """``encoder.down.0.block.0.norm1.weight`` -> ``encoder.*``; ``loss.discriminator.main.0.weight`` ->
    ``loss.discriminator.*``; a key without a dot stays as it is."""
    parts = key.split(" ")[0].split(".")
    if len(parts) == 1:
        return key
    depth = 2 if parts[0] in ("loss", "quantize", "tokenizer") and len(parts) > 2 else 1
    return ".".join(parts[:depth]) + ".*"


def format_report(result: ImportResult) -> str:
    """What was taken (grouped by prefix), ignored (with reasons), kept initial, and unmapped config keys."""
    imported = result.imported
    lines = [
        f"imported {imported.source.get('format', '?')} checkpoint {imported.source.get('checkpoint', '?')}",
        f"  -> {result.run_dir} ({imported.source.get('backbone', '?')}, step {imported.step}); "
        f"config from {imported.source.get('config', '?')}",
        f"taken: {len(result.taken)} weights",
    ]
    taken: dict[tuple[str, str], int] = defaultdict(int)
    for target, origin in result.taken.items():
        taken[(_group(origin), _group(target))] += 1
    lines += [f"  {src:<28} -> {dst:<32} {n:>5}" for (src, dst), n in sorted(taken.items())]
    ignored: dict[tuple[str, str], int] = defaultdict(int)
    for key, reason in imported.ignored.items():
        ignored[(_group(key), reason)] += 1
    if ignored:
        lines.append(f"ignored: {len(imported.ignored)} entries")
        lines += [f"  {group} ({n}): {reason}" for (group, reason), n in sorted(ignored.items())]
    if imported.kept_initial:
        lines.append("kept at the freshly built model's value:")
        lines += [f"  {key}: {reason}" for key, reason in sorted(imported.kept_initial.items())]
    if imported.unmapped_config:
        lines.append("config keys with no lgvq equivalent:")
        lines += [f"  {key}: {reason}" for key, reason in sorted(imported.unmapped_config.items())]
    lines += [
        f"every key, one per line: {result.run_dir / REPORT_FILE}",
        f"next: lgvq eval {result.run_dir} --tasks reconstruction  |  fine-tune: [train] init_from = "
        f'"{result.run_dir}"',
    ]
    return "\n".join(lines)
