"""The ``lgvq`` command line.

``plugins``, ``list``, ``check``, ``schema`` and ``version`` never import torch and never fail
because of a broken plugin; ``run`` and ``eval`` import the runner only when called.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from lgvq_core import __version__
from lgvq_core.config.describe import format_schema
from lgvq_core.config.schema import (
    CodesSection,
    CodeViTSection,
    CompareArm,
    CompareSection,
    DownstreamRunFile,
    RunFile,
    RunSection,
    TokenizerSection,
    TrainSection,
)
from lgvq_core.errors import ConfigError, LgvqError
from lgvq_core.providers import kind_hint
from lgvq_core.registry import get_registry
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.compare_cli import compare_from_cli
from lgvq_core.specs import normalize_kind, normalize_name

EXIT_CONFIG = 2


def _registry():

    return get_registry()


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
def cmd_version(args: argparse.Namespace) -> int:

    print(f"lgvq-core {__version__}")
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = dist.metadata["Name"] or ""
        if name.lower().startswith("lgvq") and name.lower() != "lgvq-core":
            print(f"{name} {dist.version}")
    for other in ("torch", "open_clip_torch", "pluggy"):
        try:
            print(f"{other} {importlib.metadata.version(other)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{other} (not installed)")
    print(f"python {sys.version.split()[0]}")
    return 0


def _location(failure: dict) -> str:
    return f"  (at {failure['location']})" if failure.get("location") else ""


def plugin_lines(plugin: dict) -> list[str]:
    """The lines ``lgvq plugins`` prints under one loaded plugin: what it provides, or why nothing."""
    lines = [f"    {kind}: {', '.join(names)}" for kind, names in plugin["components"].items()]
    for kind, names in plugin.get("conflicting", {}).items():
        lines.append(f"    {kind} (CONFLICT, not available): {', '.join(names)}")
    if plugin.get("hooks"):
        lines.append(f"    hooks: {', '.join(plugin['hooks'])}")
    for failure in plugin.get("failed", []):
        lines.append(f"    FAILED {failure['hook']}: {failure['error']}{_location(failure)}")
    if not lines:
        if plugin.get("registration_hooks"):
            lines.append(f"    (no components: {', '.join(plugin['registration_hooks'])} returned none)")
        else:
            lines.append("    (no hook implementations: mark the module's lgvq_* functions with @hookimpl)")
    return lines


def cmd_plugins(args: argparse.Namespace) -> int:
    report = _registry().report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    loaded = {plugin["name"] for plugin in report["plugins"]}
    for plugin in report["plugins"]:
        print(f"{plugin['name']}  ({plugin['distribution']} {plugin['version']}, {plugin['module']})")
        for line in plugin_lines(plugin):
            print(line)
    for failure in report["failed"]:
        if failure["name"] not in loaded:
            print(
                f"FAILED {failure['name']}  ({failure['distribution']} {failure['version']}): "
                f"{failure['error']}{_location(failure)}"
            )
    for name in report["disabled"]:
        print(f"disabled {name}  (LGVQ_DISABLE_PLUGINS)")
    for conflict in report["conflicts"]:
        print(f"CONFLICT {conflict}")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import fnmatch

    registry = _registry()
    try:
        names = registry.list_components(args.kind, args.pattern)
        kind = normalize_kind(args.kind)
    except ValueError as exc:
        print(f"lgvq list: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    entries = {e.name: e for e in registry.entries(kind)}
    pattern = normalize_name(args.pattern)
    conflicts = {key: claims for key, claims in registry.conflicts[kind].items() if fnmatch.fnmatchcase(key, pattern)}
    width = max((len(n) for n in [*names, *conflicts]), default=0)
    for name in names:
        entry = entries[name]
        print(f"{name:<{width}}  {entry.spec.summary}  [{entry.plugin}: {entry.distribution} {entry.version}]")
    for key, claims in sorted(conflicts.items()):
        owners = " and ".join(f"{c.plugin}: {c.distribution} {c.version}" for c in claims)
        print(f"{key:<{width}}  CONFLICT: provided by {owners}; not usable until one is uninstalled or disabled")
    if not names and not conflicts:
        hint = kind_hint(kind) if not registry.entries(kind) else ""
        print(f"no {args.kind} matches {args.pattern!r}{hint}", file=sys.stderr)
    for failure in registry.failures:
        print(f"note: {failure.describe()}", file=sys.stderr)
    for warning in registry.manager.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:

    try:
        loaded = load_run_file(args.file, overrides=args.set)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s); nothing was run", file=sys.stderr)
        return EXIT_CONFIG
    errors, warnings = machine_problems(loaded.config)
    for warning in [*loaded.warnings, *warnings]:
        print(str(warning), file=sys.stderr)
    if errors:
        for problem in errors:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(errors)} problem(s) on this machine; nothing was run", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: ok")
    return 0


def machine_problems(config) -> tuple[list[str], list[str]]:
    """What ``lgvq run`` would refuse on this machine that the file alone does not show: a data folder
    that is missing, a CUDA device that is not there, a tracker package that is not installed. ``(errors, warnings)``; no CUDA at all is a
    warning (the file may be meant for another machine)."""
    from pathlib import Path

    errors, warnings = [], []
    for index, task in enumerate(getattr(config, "tasks", []) or []):
        check = getattr(task.config, "machine_warnings", None)  # what a task cannot do on this machine
        if callable(check):
            warnings += [f"warning: $.tasks[{index}] ({task.type}): {message}" for message in check()]
    for index, logger in enumerate(getattr(config, "loggers", []) or []):
        check = getattr(logger.config, "machine_problems", None)  # a tracker package missing here
        if callable(check):
            errors += [f"$.loggers[{index}] ({logger.type}): {message}" for message in check()]
    data = getattr(getattr(config, "data", None), "config", None)
    root = getattr(data, "root", None)
    if isinstance(root, str) and root and not Path(root).expanduser().is_dir():
        errors.append(f"$.data.root: no such folder: {root}; set data.root to the dataset's folder")
    device = config.run.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            warnings.append(
                f'warning: $.run.device: "{device}" but this machine has no CUDA device; `lgvq run` here would stop '
                '(fine for a file meant for a GPU machine; use device = "cpu" to run it here)'
            )
        elif ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            errors.append(
                f'$.run.device: "{device}" but this machine has {torch.cuda.device_count()} CUDA device(s) '
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return errors, warnings


def cmd_schema(args: argparse.Namespace) -> int:

    if args.kind == "run":
        for title, cls in (
            ("[run]", RunSection),
            ("[train]", TrainSection),
            ("[code_vit]", CodeViTSection),
            ("[compare]", CompareSection),
            ("[[compare.arms]]", CompareArm),
            ("run file", RunFile),
            ("[tokenizer] (downstream runs)", TokenizerSection),
            ("[codes] (downstream runs)", CodesSection),
            ("downstream run file", DownstreamRunFile),
        ):
            print(format_schema("section", title, (cls.__doc__ or "").strip().splitlines()[0], cls))
            print()
        return 0
    if args.name is None:
        print("lgvq schema: give KIND NAME (e.g. `lgvq schema quantizer vq`) or `lgvq schema run`", file=sys.stderr)
        return EXIT_CONFIG
    registry = _registry()
    try:
        entry = registry.get(args.kind, args.name, path="lgvq schema")
    except (LgvqError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    print(format_schema(entry.kind, entry.name, entry.spec.summary, entry.spec.config_cls))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lgvq_core.runner.launch import run_from_cli  # lazy: imports torch; the other commands stay torch-free

    return run_from_cli(args)


def cmd_compare(args: argparse.Namespace) -> int:

    return compare_from_cli(args)


def cmd_sample(args: argparse.Namespace) -> int:
    from lgvq_core.runner.sample_cli import sample_from_cli  # lazy: imports torch; the other commands stay torch-free

    return sample_from_cli(args)


def cmd_shards(args: argparse.Namespace) -> int:
    from lgvq_core.data.shard_writer import shards_from_cli  # lazy: imports torch; the other commands stay torch-free

    return shards_from_cli(args)


def cmd_import(args: argparse.Namespace) -> int:
    from lgvq_core.interop.importing import import_from_cli  # lazy: imports torch; the other commands stay torch-free

    return import_from_cli(args)


def cmd_export(args: argparse.Namespace) -> int:
    from lgvq_core.interop.exporting import export_from_cli  # lazy: imports torch; the other commands stay torch-free

    return export_from_cli(args)


def cmd_plot(args: argparse.Namespace) -> int:
    from lgvq_core.runner.plot import plot_from_cli  # lazy: imports matplotlib; the other commands stay without it

    return plot_from_cli(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from lgvq_core.runner.evaluate import eval_from_cli  # lazy: imports torch; the other commands stay torch-free

    return eval_from_cli(args)


# ------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------
def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False, what: str = ""):
    """An argparse type: a finite ``kind`` within [low, high] (``low_open``: above low), else a one-line error."""

    def parse(text: str):
        import math

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what or kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'above' if low_open else 'at least'} {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    return parse


POSITIVE_INT = _number(int, 1, what="a whole number")
SEED = _number(int, 0, 2**63 - 1, what="a whole number")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lgvq", description="Language-guided codebook learning (LG-VQ).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="train a tokenizer, or a model on a tokenizer's frozen codes, from a run file")
    p.add_argument("file", nargs="?", help="run file (TOML); optional with --resume")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last")
    p.add_argument("--device", help="override run.device")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="evaluate a trained run directory")
    p.add_argument("run_dir", help="run directory written by `lgvq run`")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint path (default: best)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="task names (default: the run file's [[tasks]])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of the run file")
    p.add_argument("--device", help="device to evaluate on")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="images from a trained downstream model (a run with [downstream])")
    p.add_argument("run_dir", help="downstream run directory written by `lgvq run`")
    p.add_argument("-n", type=POSITIVE_INT, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of every draw, 0 to 2^63-1 (default 0)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint path (default: best)")
    p.add_argument(
        "--caption", action="append", metavar="TEXT", help="text models: caption(s) to draw from (repeatable)"
    )
    p.add_argument(
        "--temperature", type=_number(float, 0, low_open=True), help="code-gpt: divide the logits by this (> 0)"
    )
    p.add_argument("--top-k", dest="top_k", type=POSITIVE_INT, help="code-gpt: keep the k most likely codes (>= 1)")
    p.add_argument(
        "--top-p", dest="top_p", type=_number(float, 0, 1, low_open=True), help="code-gpt: nucleus probability, (0, 1]"
    )
    p.add_argument(
        "--guidance", dest="guidance_scale", type=_number(float), help="text conditions: classifier-free guidance scale"
    )
    p.add_argument("--steps", type=POSITIVE_INT, help="text-to-image: denoising steps (fewer skip steps)")
    p.add_argument("--truncation", type=_number(float, 0, 1, low_open=True), help="text-to-image: truncation r, (0, 1]")
    p.add_argument("--batch-size", dest="batch_size", type=POSITIVE_INT, default=16, help="images per batch")
    p.add_argument("--device", help="device to sample on")
    p.add_argument("--out", help="output folder (default: RUN_DIR/generated/step-N-seed-S)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "compare",
        help="LG-VQ vs baseline over seeds: train every arm of a run file for every seed ([compare] table; "
        "default: with and without its [[alignment]] losses), evaluate, and table mean ± spread with the "
        "differences that hold; or table already evaluated run directories",
    )
    p.add_argument("sources", nargs="+", metavar="FILE|RUN_DIR", help="one run file, or evaluated run directories")
    p.add_argument("--labels", nargs="+", help="arm labels of the run directories (same label: one arm's seeds)")
    p.add_argument("--out", help="comparison folder (default: <run.output_dir>/<run.name>-comparison)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of the run file")
    p.add_argument(
        "--seeds", type=int, metavar="N", help="train N seeds: the first N of [compare] seeds, continued upwards"
    )
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="train N runs at a time in separate processes")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run from its last checkpoint (default: train it again; finished runs are "
        "always kept)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("plot", help="loss curves and validation metrics over steps of one or more runs, overlaid")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `lgvq run`")
    p.add_argument("--out", help="figure file, .png or .svg (default: plot.png in the first run directory)")
    p.add_argument("--labels", nargs="+", help="a label per run directory (default: the directory names)")
    p.add_argument("--metrics", nargs="+", metavar="NAME", help="only these metrics (default: every one)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "import", help="turn another project's checkpoint into an lgvq run directory (`lgvq list importer`)"
    )
    p.add_argument("format", metavar="FORMAT", help="the checkpoint's project, e.g. taming or lg-vq")
    p.add_argument("checkpoint", help="the checkpoint file (a PyTorch Lightning .ckpt)")
    p.add_argument("out", metavar="OUT_RUN_DIR", help="run directory to create (must not exist or be empty)")
    p.add_argument("--config", help="the project's model config (YAML) the checkpoint was trained with")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an importer option (repeatable)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write a trained tokenizer in another format (`lgvq list exporter`)")
    p.add_argument("run_dir", help="tokenizer run directory written by `lgvq run` (or `lgvq import`)")
    p.add_argument("--format", required=True, help="diffusers, folder, ...")
    p.add_argument("out", help="folder to write (must not exist or be empty)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint path (default: best)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an exporter option (repeatable)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("shards", help="write a run file's dataset as WebDataset-style tar shards (tar-shards)")
    p.add_argument("file", help="run file whose [data] to write")
    p.add_argument("out", help="folder to write train/shard-*.tar and val/shard-*.tar into")
    p.add_argument("--samples-per-shard", type=POSITIVE_INT, default=1000, metavar="N")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty OUT (once the new shards are complete)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("check", help="validate a run file; report every problem; run nothing")
    p.add_argument("file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plugins", help="installed plugins, their components, and failures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("list", help="components of a kind (backbone, quantizer, text-encoder, ...)")
    p.add_argument("kind")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'vq*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("schema", help="a component's options: types, defaults, docs (or `schema run`)")
    p.add_argument("kind")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("version", help="versions of lgvq packages and key dependencies")
    p.set_defaults(func=cmd_version)
    return parser


#: Commands that report plugins that failed to load themselves (the others get one line each from _dispatch).
REPORT_PLUGIN_FAILURES = {"run", "plugins", "list", "version"}


def _note_plugin_failures(command: str) -> None:
    """The same line as ``lgvq run`` for every plugin that failed to load, on every other command."""
    if command in REPORT_PLUGIN_FAILURES or _torchrun_worker():
        return
    try:
        failures = _registry().failures  # already loaded by nearly every command
    except Exception:  # noqa: BLE001 - a strict plugin load failed: the command reported that error
        return
    for failure in failures:
        print(f"warning: {failure.describe()}; its components are unavailable (see `lgvq plugins`)", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return _dispatch_command(args)
    finally:
        _note_plugin_failures(args.command)


def _dispatch_command(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except LgvqError as exc:
        print(f"lgvq {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _torchrun_worker() -> bool:
    """True in one of several processes started by ``torchrun``."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _leave_torchrun_worker(code: int) -> None:
    """End a torchrun worker without interpreter finalisation.

    The process group is destroyed and every stream flushed first; what a run writes is already on
    disk (atomic, fsynced writes). Finalisation is skipped because a communication thread that
    still releases a tensor then would need the interpreter lock while the interpreter is being
    torn down, which aborts the process ("terminate called without an active exception") and
    makes torchrun report a run that finished as failed.
    """
    try:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _torchrun_worker():
        return _dispatch(args)
    code = 1
    try:
        code = _dispatch(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - reported here, since the process ends without finalisation
        traceback.print_exc()
    _leave_torchrun_worker(code)
    return code  # pragma: no cover - not reached


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
