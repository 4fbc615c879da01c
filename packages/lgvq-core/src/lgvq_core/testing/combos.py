"""Plugin combinations: every installed backbone × quantizer × {no LG, LG with each text encoder}, trained.

The matrix comes from the registry, so a third-party component joins it by being installed:

    python -m lgvq_core.testing.combos                         # every combination
    python -m lgvq_core.testing.combos --plugin example-backbone --steps 2
    python -m lgvq_core.testing.combos --list                  # the matrix, with the skip reasons

Each component is configured with its config class's ``contract_config()`` (the small instance
the plugin contract builds; the defaults otherwise). A combination the run-file check refuses
(``vqct`` backbone with a ``vq`` quantizer, a ``vqct`` quantizer without a text encoder) is
skipped with the check's own message. Every other one trains for a few steps on CPU, and
:func:`check_run` asserts that every logged loss is finite, that the ``last`` checkpoint loads
back into a freshly built model at the right step, and that the reloaded model's code indices
are integers within its codebook.

Nothing here imports torch or pytest at module level; sizing the components uses the contract
module, so install ``lgvq-core[testing]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from lgvq_core.config import loader
from lgvq_core.config.describe import unstructure
from lgvq_core.errors import ConfigError
from lgvq_core.registry import Registry, get_registry
from lgvq_core.specs import RegisteredComponent

#: The run-file sections every combination shares: 32-pixel synthetic shapes with captions, CPU,
#: batches of 2 (semantic-nce needs a negative), validation and a checkpoint at the last step.
BASE_RUN: dict[str, Any] = {
    "run": {"seed": 0, "device": "cpu", "progress": "off", "log_every": 1},
    "train": {"batch_size": 2, "base_lr": 1e-4, "lr_scaling": "none", "val_batches": 1},
    "data": {"type": "shapes", "image_size": 32, "num_train": 8, "num_val": 4, "captions_per_image": 2},
    "code_vit": {"layers": 1, "heads": 1},
}

#: Marks the "no alignment losses" column of the matrix.
NO_LG = "none"


@attrs.frozen
class Combination:
    """One cell of the matrix: the run file that trains it, or why it is skipped."""

    backbone: str
    quantizer: str
    text_encoder: str  # NO_LG for the baseline without the alignment losses
    run_file: dict[str, Any] = attrs.field(eq=False, repr=False)
    skip: str | None = None

    @property
    def id(self) -> str:
        return (
            f"{self.backbone}+{self.quantizer}+{'no-lg' if self.text_encoder == NO_LG else 'lg-' + self.text_encoder}"
        )


def small_table(entry: RegisteredComponent) -> dict[str, Any]:
    """The run-file table of ``entry`` at its contract size (``contract_config()``, else the defaults)."""
    from lgvq_core.testing.contract import contract_config  # lazy: the contract imports pytest (lgvq-core[testing])

    return {"type": entry.spec.name, **unstructure(contract_config(entry.spec.config_cls))}


def _run_file(
    backbone: dict[str, Any],
    quantizer: dict[str, Any],
    text_encoder: dict[str, Any] | None,
    losses: list[str],
    steps: int,
) -> dict[str, Any]:
    run = json.loads(json.dumps(BASE_RUN))
    run["train"].update({"max_steps": steps, "val_every": steps, "checkpoint_every": steps, "sample_every": steps})
    run["model"] = {"backbone": backbone, "quantizer": quantizer}
    if text_encoder is not None:
        run["text_encoder"] = text_encoder
        run["alignment"] = [{"type": name} for name in losses]
    return run


def _matches(name: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def combinations(
    registry: Registry,
    plugins: Iterable[str] | None = None,
    steps: int = 2,
    backbones: Sequence[str] | None = None,
    quantizers: Sequence[str] | None = None,
    text_encoders: Sequence[str] | None = None,
) -> list[Combination]:
    """The matrix from ``registry``: each backbone × each quantizer × {no LG, LG with each text encoder}.

    The LG column uses every installed alignment loss at its default weight. ``plugins`` keeps the
    combinations in which at least one component comes from one of these plugins (a plugin
    author's view); ``backbones``, ``quantizers`` and ``text_encoders`` are shell patterns that
    narrow the matrix. Each combination is checked like a run file (``lgvq check``); a refused
    one carries the check's messages as its ``skip`` reason.
    """

    wanted = None if plugins is None else set(plugins)
    losses = [entry.spec.name for entry in registry.entries("alignment_loss")]
    encoders: list[RegisteredComponent | None] = [None]
    encoders += [e for e in registry.entries("text_encoder") if _matches(e.spec.name, text_encoders)]
    found = []
    for backbone in registry.entries("backbone"):
        if not _matches(backbone.spec.name, backbones):
            continue
        for quantizer in registry.entries("quantizer"):
            if not _matches(quantizer.spec.name, quantizers):
                continue
            for encoder in encoders:
                parts = [backbone, quantizer] + ([encoder] if encoder is not None else [])
                if wanted is not None and not wanted & {p.plugin for p in parts}:
                    continue
                run = _run_file(
                    small_table(backbone),
                    small_table(quantizer),
                    small_table(encoder) if encoder is not None else None,
                    losses,
                    steps,
                )
                skip = None
                try:
                    loader.validate(run, registry=registry, source="combination")
                except ConfigError as exc:
                    skip = "; ".join(exc.problems)
                name = encoder.spec.name if encoder is not None else NO_LG
                found.append(Combination(backbone.spec.name, quantizer.spec.name, name, run, skip))
    return found


@attrs.frozen
class ComboResult:
    """What training one combination gave."""

    combination: Combination
    run_dir: Path
    steps: int
    losses: dict[str, float]
    codebook_size: int
    index_range: tuple[int, int]


def run_combination(combination: Combination, registry: Registry, output_dir: str | Path) -> ComboResult:
    """Train ``combination`` for its steps under ``output_dir`` and check the result (:func:`check_run`)."""
    from lgvq_core.runner.loop import train  # lazy: imports torch; listing the matrix does not

    if combination.skip:
        raise ValueError(f"{combination.id} is skipped: {combination.skip}")
    run_file = json.loads(json.dumps(combination.run_file))
    run_file["run"].update({"name": combination.id.replace("+", "_"), "output_dir": str(output_dir)})
    loaded = loader.validate(run_file, registry=registry, source=combination.id)
    result = train(loaded)
    return check_run(combination, result.run_dir, run_file["train"]["max_steps"])


def check_run(combination: Combination, run_dir: str | Path, steps: int) -> ComboResult:
    """Finite losses, a ``last`` checkpoint that reloads at step ``steps``, indices within the codebook.

    Raises :class:`AssertionError` naming the combination and what is wrong.
    """
    import torch

    from lgvq_core.runner.evaluate import load_trained  # lazy: imports torch; listing the matrix does not

    run_dir = Path(run_dir)
    name = combination.id
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("split") == "train"]
    assert train, f"{name}: metrics.jsonl has no training record"
    losses = {k: float(v) for k, v in train[-1].items() if k.endswith("loss") and isinstance(v, (int, float))}
    assert "loss" in losses, f"{name}: the last training record has no loss: {train[-1]}"
    for record in train:
        bad = {k: v for k, v in record.items() if k.endswith("loss") and isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"{name}: non-finite losses at step {record.get('step')}: {bad}"
    if combination.text_encoder != NO_LG:
        lg = [k for k in losses if k not in {"loss", "rec_loss", "quantizer_loss"} and not k.startswith("d_")]
        assert lg, f"{name}: trained with alignment losses but none was logged: {sorted(losses)}"

    model, data, _ = load_trained(run_dir, "last", device="cpu")
    assert model.step == steps, f"{name}: checkpoints/last is at step {model.step}, expected {steps}"
    images = torch.stack([data[i]["image"] for i in range(min(2, len(data)))])
    with torch.no_grad():
        out = model.tokenizer(images)
    size = int(model.tokenizer.quantizer.codebook_size)
    indices = out.indices
    assert not indices.dtype.is_floating_point, f"{name}: indices have dtype {indices.dtype}"
    low, high = int(indices.min()), int(indices.max())
    assert 0 <= low and high < size, f"{name}: indices range over [{low}, {high}], the codebook has {size} codes"
    assert torch.isfinite(out.recon).all(), f"{name}: the reloaded model reconstructs non-finite pixels"
    return ComboResult(combination, run_dir, model.step, losses, size, (low, high))


# ------------------------------------------------------------------------------------------
# python -m lgvq_core.testing.combos
# ------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lgvq_core.testing.combos",
        description="Train every installed backbone x quantizer x {no LG, LG per text encoder} for a few CPU steps.",
    )
    parser.add_argument("--plugin", action="append", metavar="NAME", help="only combinations using this plugin")
    parser.add_argument("--backbone", action="append", metavar="PATTERN", help="backbone names (shell pattern)")
    parser.add_argument("--quantizer", action="append", metavar="PATTERN", help="quantizer names (shell pattern)")
    parser.add_argument("--text-encoder", action="append", metavar="PATTERN", help="text encoders for the LG column")
    parser.add_argument("--steps", type=int, default=2, help="training steps per combination (default 2)")
    parser.add_argument("--out", help="folder for the run directories (default: a temporary folder)")
    parser.add_argument("--list", action="store_true", help="print the matrix and the skip reasons; train nothing")
    return parser


def contract_failure(entry: RegisteredComponent, registry: Registry) -> str | None:
    """The first thing the plugin contract finds wrong with ``entry`` (its spec, building it, running it
    once on a tiny input), or None. Cheap next to training every combination that uses it."""
    from lgvq_core.testing.contract import (
        build_component,
        exercise,
        spec_problems,
    )  # lazy: the contract imports pytest (lgvq-core[testing])

    problems = spec_problems(entry)
    if problems:
        return problems[0]
    with tempfile.TemporaryDirectory(prefix="lgvq-contract-") as cache:
        try:
            component, _, context = build_component(entry, registry, cache)
            exercise(entry, component, context)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def failing_components(matrix: Sequence[Combination], registry: Registry, plugins: Sequence[str]) -> dict[str, str]:
    """``kind:name`` -> the contract's finding, for the components of ``plugins`` in the matrix."""
    failures: dict[str, str] = {}
    checked: set[tuple[str, str]] = set()
    for combination in matrix:
        parts = [("backbone", combination.backbone), ("quantizer", combination.quantizer)]
        if combination.text_encoder != NO_LG:
            parts.append(("text_encoder", combination.text_encoder))
        for kind, name in parts:
            if (kind, name) in checked:
                continue
            checked.add((kind, name))
            entry = registry.get(kind, name)
            if entry.plugin not in plugins:
                continue
            finding = contract_failure(entry, registry)
            if finding is not None:
                failures[f"{kind}:{name}"] = finding
    return failures


def selection_problems(registry: Registry, plugins: Sequence[str] | None, encoders: Sequence[str] | None) -> list[str]:
    """A ``--plugin`` that is not installed, a ``--text-encoder`` pattern that matches nothing: each a message."""
    problems = []
    installed = sorted(registry.manager.infos)
    for name in plugins or ():
        if name not in installed:
            failed = [f for f in registry.failures if f.name == name]
            why = f" (it failed to load: {failed[0].describe()})" if failed else ""
            problems.append(
                f"--plugin {name}: no installed plugin of that name{why}; installed: {', '.join(installed)} "
                "(install yours with pip install -e PATH)"
            )
    names = [entry.spec.name for entry in registry.entries("text_encoder")]
    for pattern in encoders or ():
        if not _matches_any(pattern, names):
            have = ", ".join(names) if names else "none (pip install lgvq-text-encoders)"
            problems.append(f"--text-encoder {pattern}: matches no installed text encoder; installed: {have}")
    return problems


def _matches_any(pattern: str, names: Sequence[str]) -> bool:
    return any(_matches(name, [pattern]) for name in names)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix; exit 1 when a combination fails, 2 when none is left to run."""
    import os

    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    registry = get_registry()
    problems = selection_problems(registry, args.plugin, args.text_encoder)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    if not registry.entries("text_encoder"):
        print(
            "note: no text encoder is installed, so the language-guided column is left out "
            "(pip install lgvq-text-encoders to test it)",
            file=sys.stderr,
        )
    matrix = combinations(registry, args.plugin, args.steps, args.backbone, args.quantizer, args.text_encoder)
    if not matrix:
        print("nothing to run: --backbone / --quantizer match no installed component", file=sys.stderr)
        return 2
    if args.plugin and not args.list:  # the author's components pass the contract first, or their pairs are skipped
        failures = failing_components(matrix, registry, args.plugin)
        for key, finding in failures.items():
            kind, name = key.split(":", 1)
            print(f"contract: {kind.replace('_', '-')} {name!r} fails the plugin contract: {finding}", flush=True)
        if failures:
            matrix = [
                attrs.evolve(c, skip=c.skip or "its component failed the plugin contract (above)")
                if {f"backbone:{c.backbone}", f"quantizer:{c.quantizer}", f"text_encoder:{c.text_encoder}"}
                & set(failures)
                else c
                for c in matrix
            ]
    runnable = [c for c in matrix if not c.skip]
    for combination in matrix:
        print(
            f"{'skip' if combination.skip else 'run '}  {combination.id}"
            + (f": {combination.skip}" if combination.skip else "")
        )
    print(f"{len(runnable)} of {len(matrix)} combination(s) to run", flush=True)
    if args.list:
        return 0
    if not runnable:
        print("nothing to run: every combination is skipped (the reasons are above)", file=sys.stderr)
        return 2
    failed = []
    with tempfile.TemporaryDirectory(prefix="lgvq-combos-") as scratch:
        out = Path(args.out or scratch)
        for combination in runnable:
            try:
                result = run_combination(combination, registry, out)
            except Exception as exc:  # noqa: BLE001 - reported per combination, the others still run
                failed.append(combination.id)
                print(f"FAILED {combination.id}: {type(exc).__name__}: {exc}", flush=True)
                continue
            shown = " ".join(f"{k} {v:.4g}" for k, v in sorted(result.losses.items()))
            print(
                f"ok    {combination.id}: step {result.steps}, {shown}, indices in "
                f"[{result.index_range[0]}, {result.index_range[1]}] of {result.codebook_size}",
                flush=True,
            )
    print(f"{len(runnable) - len(failed)} passed, {len(failed)} failed, {len(matrix) - len(runnable)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
