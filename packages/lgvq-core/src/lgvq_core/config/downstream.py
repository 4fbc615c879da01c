"""Run files of downstream runs: defaults taken from the tokenizer run, and the checks ``lgvq check`` makes.

A downstream run file names a trained tokenizer run (``[tokenizer] run_dir``). Before the file is
structured, :func:`fill_from_tokenizer_run` reads that run's ``resolved.toml`` (plain TOML, no
torch) and fills what the downstream file leaves out: ``[data]`` and ``[text_encoder]`` from the
tokenizer run, and ``[train]`` keys from the model's :class:`~lgvq_core.specs.DownstreamSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli

from lgvq_core.checkpoint_files import MODEL_FILE
from lgvq_core.config.problems import Problem
from lgvq_core.data.annotations import annotation_problem
from lgvq_core.errors import DuplicateComponentError, UnknownComponentError
from lgvq_core.specs import DownstreamSpec

#: The optional table naming a second frozen tokenizer that encodes each item's condition (semantic ``vq``).
CONDITION_TOKENIZER = "condition_tokenizer"
#: The dataset a condition tokenizer must have been trained on.
MASK_DATASET = "segmentation-maps"

#: ``[train]`` defaults of every downstream run (a model's spec may change them further).
DOWNSTREAM_TRAIN_DEFAULTS: Mapping[str, Any] = {"best_metric": "loss"}


def is_downstream(raw: Mapping[str, Any]) -> bool:
    """A run file with a ``[downstream]`` table trains a model on frozen codes."""
    return "downstream" in raw


def tokenizer_run_file(
    raw: Mapping[str, Any], name: str = "tokenizer"
) -> tuple[Path | None, dict[str, Any] | None, list[Problem]]:
    """The run directory ``[name] run_dir`` and its parsed ``resolved.toml``, or the problems that prevent reading it."""
    section = raw.get(name)
    where = f"$.{name}.run_dir"
    if not isinstance(section, Mapping) or not isinstance(section.get("run_dir"), str):
        return None, None, []  # reported by the structuring walker
    run_dir = Path(section["run_dir"]).expanduser()
    resolved = run_dir / "resolved.toml"
    if not run_dir.is_dir():
        return (
            run_dir,
            None,
            [
                Problem(
                    where,
                    f"no such run directory: {run_dir}; give the run directory `lgvq run` printed (in the file, "
                    f"or on the command line: --set {name}.run_dir=runs/<name>/<timestamp>-<id>)",
                )
            ],
        )
    if not resolved.is_file():
        return (
            run_dir,
            None,
            [Problem(where, f"{run_dir} is not a run directory of `lgvq run` (no resolved.toml)")],
        )
    try:
        parsed = tomli.loads(resolved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError) as exc:
        return run_dir, None, [Problem(where, f"cannot read {resolved}: {exc}")]
    if "downstream" in parsed or "model" not in parsed:
        return (
            run_dir,
            None,
            [Problem(where, f"{run_dir} is not a tokenizer run (its run file has no [model])")],
        )
    for section in ("model", "data", "text_encoder", "run", "train"):
        if section in parsed and not isinstance(parsed[section], dict):
            return (
                run_dir,
                None,
                [
                    Problem(
                        where,
                        f"{resolved}: [{section}] is {type(parsed[section]).__name__} {parsed[section]!r}, not a "
                        "table; it is not the run file `lgvq run` wrote",
                    )
                ],
            )
    return run_dir, parsed, []


def checkpoint_problems(run_dir: Path, which: str, name: str = "tokenizer") -> list[Problem]:
    """Whether ``which`` (best, last or a path) names a checkpoint of ``run_dir``; no file is loaded."""
    where = f"$.{name}.checkpoint"
    if which in ("best", "last"):
        pointers = [which] if which == "last" else ["best", "last"]  # best falls back to last
        if not any((run_dir / "checkpoints" / f"{p}.json").is_file() for p in pointers):
            return [
                Problem(
                    where,
                    f"{run_dir} has no {which!r} checkpoint yet (checkpoints/{which}.json is missing); "
                    "train the tokenizer first or name a checkpoint directory",
                )
            ]
        return []
    path = Path(which).expanduser()
    if not (path / MODEL_FILE).is_file():
        return [Problem(where, f"{path} is not a checkpoint directory (no {MODEL_FILE} in it)")]
    return []


def fill_from_tokenizer_run(raw: dict[str, Any], registry: Any) -> list[Problem]:
    """Fill ``[data]``, ``[text_encoder]`` and ``[train]`` defaults of a downstream run file in place."""
    run_dir, tokenizer_raw, problems = tokenizer_run_file(raw)
    if run_dir is not None and tokenizer_raw is not None:
        checkpoint = raw["tokenizer"].get("checkpoint", "best")
        if isinstance(checkpoint, str):
            problems += checkpoint_problems(run_dir, checkpoint)
        for section in ("data", "text_encoder"):
            if section not in raw and section in tokenizer_raw:
                raw[section] = tokenizer_raw[section]
        problems += _codebook_fit(raw, tokenizer_raw)
    if "condition_tokenizer" in raw:
        problems += condition_tokenizer_problems(raw)
    train = dict(DOWNSTREAM_TRAIN_DEFAULTS)
    spec = _downstream_spec(raw, registry)
    if spec is not None:
        train.update(spec.default_train)
    given = raw.get("train")
    if given is None or isinstance(given, Mapping):
        raw["train"] = {**train, **dict(given or {})}
    return problems


def condition_tokenizer_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """``[condition_tokenizer]``: a trained mask autoencoder (a run on ``segmentation-maps``) whose codebook fits.

    The semantic ``vq`` condition of ``code-gpt`` encodes each item's label map with it; its
    ``condition_vocab`` defaults to that run's codebook size, and a given one must equal it.
    """
    run_dir, mask_raw, problems = tokenizer_run_file(raw, CONDITION_TOKENIZER)
    if run_dir is None or mask_raw is None:
        return problems
    checkpoint = raw[CONDITION_TOKENIZER].get("checkpoint", "best")
    if isinstance(checkpoint, str):
        problems += checkpoint_problems(run_dir, checkpoint, CONDITION_TOKENIZER)
    data_type = mask_raw.get("data", {}).get("type")
    if data_type != MASK_DATASET:
        problems.append(
            Problem(
                f"$.{CONDITION_TOKENIZER}.run_dir",
                f"{run_dir} was trained on {data_type!r} images, not on label maps; train the mask autoencoder with "
                f'[data] type = "{MASK_DATASET}"',
            )
        )
    quantizer = mask_raw.get("model", {}).get("quantizer", {})
    size = quantizer.get("codebook_size") if isinstance(quantizer, Mapping) else None
    table = raw.get("downstream")
    wanted = table.get("condition_vocab") if isinstance(table, Mapping) else None
    if isinstance(size, int) and isinstance(wanted, int) and wanted != size:
        problems.append(
            Problem(
                "$.downstream.condition_vocab",
                f"{wanted} does not fit the condition tokenizer's codebook of {size} codes ({run_dir}); leave it out "
                "to use the condition tokenizer's",
            )
        )
    return problems


def _downstream_spec(raw: Mapping[str, Any], registry: Any) -> DownstreamSpec | None:
    table = raw.get("downstream")
    if not isinstance(table, Mapping) or not isinstance(table.get("type"), str):
        return None
    try:
        spec = registry.get_spec("downstream", table["type"])
    except (UnknownComponentError, DuplicateComponentError):
        return None  # reported by the walker
    return spec if isinstance(spec, DownstreamSpec) else None


def _codebook_fit(raw: Mapping[str, Any], tokenizer_raw: Mapping[str, Any]) -> list[Problem]:
    """A model that states its vocabulary (``codebook_size``) must match the tokenizer's codebook."""
    table = raw.get("downstream")
    quantizer = tokenizer_raw.get("model", {}).get("quantizer", {})
    size = quantizer.get("codebook_size") if isinstance(quantizer, Mapping) else None
    if not isinstance(table, Mapping) or not isinstance(size, int):
        return []
    wanted = table.get("codebook_size")
    if isinstance(wanted, int) and wanted != size:
        return [
            Problem(
                "$.downstream.codebook_size",
                f"{wanted} does not fit the tokenizer's codebook of {size} codes ({raw['tokenizer']['run_dir']}); "
                "leave it out to use the tokenizer's",
            )
        ]
    return []


def downstream_cross_check(run) -> list[Problem]:
    """What the model's condition needs from the data and the text encoder."""

    problems: list[Problem] = []
    for key in ("channels_last", "compile"):
        if getattr(run.run, key) not in (False, "off"):
            problems.append(
                Problem(
                    f"$.run.{key}",
                    "applies to tokenizer runs only (their convolutions); remove it from a downstream run",
                )
            )
    model = run.downstream.config
    uses_text = getattr(model, "uses_text", None)
    if callable(uses_text) and uses_text() and run.text_encoder is None:
        problems.append(
            Problem(
                "$.text_encoder",
                f"missing: {run.downstream.type} with this condition reads text-encoder states, and the tokenizer "
                "run has no [text_encoder] either; add one",
            )
        )
    wants = getattr(model, "uses_condition_tokenizer", None)
    wants = bool(wants()) if callable(wants) else False
    if wants and run.condition_tokenizer is None:
        problems.append(
            Problem(
                f"$.{CONDITION_TOKENIZER}",
                f"missing: {run.downstream.type} with this condition encodes label maps with a trained mask "
                f'autoencoder; add [{CONDITION_TOKENIZER}] run_dir = "..." naming a run on [data] type = '
                f'"{MASK_DATASET}"',
            )
        )
    elif not wants and run.condition_tokenizer is not None:
        problems.append(
            Problem(
                f"$.{CONDITION_TOKENIZER}",
                f"{run.downstream.type} with this condition reads no condition codes; remove the table (or use "
                'condition = "semantic" with semantic_source = "vq")',
            )
        )
    data_problems = getattr(model, "data_problems", None)  # what the model needs of this data, declared by it
    if callable(data_problems):
        problems += [Problem(path, message) for path, message in data_problems(run.data.config)]
    needed = getattr(model, "annotations", None)
    have = getattr(type(run.data.config), "annotation_kinds", frozenset())
    for kind in sorted(needed() if callable(needed) else ()):
        if kind not in have:
            problems.append(annotation_problem("$.data.type", run.data.type, kind))
    return problems
