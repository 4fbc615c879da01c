"""TOML run file -> validated attrs objects, reporting every problem at once.

The file is parsed with ``tomli`` and walked table by table. Leaf values are structured with a
strict ``cattrs`` converter (no silent ``0.5 -> 0`` or ``"yes" -> True``); component tables are
dispatched by their ``type`` key to the config class of the plugin that registered that name.
Each problem becomes one ``$.path.to.key: message`` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import tomli

from lgvq_core.config.downstream import downstream_cross_check, fill_from_tokenizer_run, is_downstream
from lgvq_core.config.overrides import apply_overrides
from lgvq_core.config.problems import Problem
from lgvq_core.config.schema import Component, DownstreamRunFile, RunFile
from lgvq_core.config.walker import Walker
from lgvq_core.errors import ConfigError, DuplicateComponentError, UnknownComponentError
from lgvq_core.specs import BackboneSpec


@attrs.frozen
class LoadedRunFile:
    """A validated run file: the structured config (a tokenizer or a downstream run), the raw tables, warnings."""

    config: RunFile | DownstreamRunFile
    raw: dict[str, Any]
    source: str
    warnings: tuple[Problem, ...] = ()


# ------------------------------------------------------------------------------------------
# cross-field checks
# ------------------------------------------------------------------------------------------
def _tokenizer_run_components(run: RunFile) -> list[tuple[str, Component]]:
    found = [("$.model.backbone", run.model.backbone), ("$.data", run.data)]
    if run.model.quantizer is not None:
        found.append(("$.model.quantizer", run.model.quantizer))
    return found + [(f"$.alignment[{i}]", c) for i, c in enumerate(run.alignment)]


def _downstream_run_components(run: DownstreamRunFile) -> list[tuple[str, Component]]:
    return [("$.downstream", run.downstream), ("$.data", run.data)]


def _component_paths(run: RunFile | DownstreamRunFile) -> list[tuple[str, Component]]:
    found = RUN_FILE_RULES[type(run)][0](run)
    if run.text_encoder is not None:
        found.append(("$.text_encoder", run.text_encoder))
    for section in ("tasks", "callbacks", "loggers"):
        found.extend((f"$.{section}[{i}]", c) for i, c in enumerate(getattr(run, section)))
    return found


def _code_vit_heads(run: RunFile) -> list[Problem]:
    """The code ViT's heads must divide its width: ``[code_vit] width``, else the codes' (the quantizer's ``dim``)."""
    if not run.alignment:
        return []
    heads, width = run.code_vit.heads, run.code_vit.width
    if width is not None:
        what = f"the code ViT width {width} ($.code_vit.width)"
    elif run.model.quantizer is not None:
        width = getattr(run.model.quantizer.config, "dim", None)
        what = f"the code dim {width} ($.model.quantizer.dim), the width of the code ViT"
    if not isinstance(width, int) or width <= 0 or width % heads == 0:
        return []
    divisors = [d for d in range(1, min(width, 64) + 1) if width % d == 0]
    return [Problem("$.code_vit.heads", f"{heads} heads do not divide {what}; use one of {divisors}")]


def _tokenizer_run_problems(run: RunFile) -> list[Problem]:
    """A tokenizer run file's own rules: the alignment losses need a text encoder, each loss once, the code ViT's heads."""
    problems: list[Problem] = []
    if run.alignment and run.text_encoder is None:
        problems.append(Problem("$.text_encoder", "missing: the [[alignment]] losses need a text encoder"))
    seen: dict[str, int] = {}
    for i, loss in enumerate(run.alignment):
        if loss.type in seen:
            problems.append(
                Problem(f"$.alignment[{i}].type", f"{loss.type!r} is already given as $.alignment[{seen[loss.type]}]")
            )
        seen.setdefault(loss.type, i)
    return problems + _code_vit_heads(run) + _init_from(run)


def _init_from(run: RunFile) -> list[Problem]:
    """``train.init_from`` names a tokenizer run directory (one with resolved.toml and checkpoints)."""
    if run.train.init_from is None:
        return []
    path = Path(run.train.init_from).expanduser()
    if not (path / "resolved.toml").is_file() or not (path / "checkpoints").is_dir():
        what = "does not exist" if not path.exists() else "is not a run directory (no resolved.toml and checkpoints/)"
        return [
            Problem("$.train.init_from", f"{path} {what}; give a run directory written by `lgvq run` or `lgvq import`")
        ]
    return []


#: What each kind of run file adds to the checks every run file gets: its own components (whose
#: ``cross_check`` runs) and its own cross-field rules. :func:`validate` picks the class.
RUN_FILE_RULES: dict[type, tuple[Any, Any]] = {
    RunFile: (_tokenizer_run_components, _tokenizer_run_problems),
    DownstreamRunFile: (_downstream_run_components, downstream_cross_check),
}


def cross_check(run: RunFile | DownstreamRunFile) -> list[Problem]:
    """Checks that need more than one table. Components add their own with ``cross_check``."""
    problems: list[Problem] = list(RUN_FILE_RULES[type(run)][1](run))
    train = run.train
    if train.warmup_steps >= train.max_steps:
        problems.append(
            Problem(
                "$.train.warmup_steps",
                f"{train.warmup_steps} warm-up steps leave none of the {train.max_steps} steps ($.train.max_steps) "
                "at the full learning rate; lower warmup_steps",
                warning=True,
            )
        )
    for path, component in _component_paths(run):
        check = getattr(component.config, "cross_check", None)
        if check is not None:
            problems.extend(check(run, path))
    problems.extend(_latent_grid(run, problems))
    return problems


def _latent_grid(run: RunFile | DownstreamRunFile, found: list[Problem]) -> list[Problem]:
    """Every backbone that declares its ``downsample`` factor (an int attribute or property of its
    config) gets the image-size check, third-party ones included (unless its own check said it)."""
    model = getattr(run, "model", None)
    backbone = getattr(getattr(model, "backbone", None), "config", None)
    factor = getattr(backbone, "downsample", None)
    size = getattr(getattr(getattr(run, "data", None), "config", None), "image_size", None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (factor, size)) or factor < 1:
        return []
    if size % factor == 0 or any("latent size" in p.message for p in found):
        return []
    return [
        Problem(
            "$.data.image_size",
            f"{size} px is not a multiple of the {model.backbone.type} backbone's downsampling ({factor}): "
            f"{size}/{factor} is not an integer latent size; use a multiple of {factor}, e.g. "
            f"{max(factor, size // factor * factor)} or {(size // factor + 1) * factor}",
        )
    ]


# ------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------
def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML, turning a syntax error into a ConfigError with line and column."""
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        msg = getattr(exc, "msg", str(exc))
        where = f"line {line}, column {col}" if line is not None else "unknown position"
        raise ConfigError([f"$: invalid TOML at {where}: {msg}"]) from None


def _with_datasets_having(problem: Problem, registry: Any) -> Problem:
    """A missing-annotation problem completed with the registered datasets that have the annotation."""
    if problem.annotation is None:
        return problem
    having = ", ".join(registry.datasets_with(problem.annotation[1])) or "none is registered"
    return attrs.evolve(problem, message=f"{problem.message}; datasets with them: {having}")


def validate(raw: Mapping[str, Any], *, registry: Any, source: str = "<run file>") -> LoadedRunFile:
    """Structure and check a parsed run file; raise :class:`ConfigError` listing every problem."""
    raw = dict(raw)
    walker = Walker(registry)
    inherited: set[str] = set()  # sections a downstream file takes from a tokenizer run that cannot be read
    if is_downstream(raw):
        missing = {f"$.{section}" for section in ("data", "text_encoder") if section not in raw}
        early = fill_from_tokenizer_run(raw, registry)
        if any(p.path == "$.tokenizer.run_dir" for p in early):
            inherited = missing
        config = walker.table(DownstreamRunFile, raw, "$")
    else:
        early = []
        _fill_default_quantizer(raw, registry)
        config = walker.table(RunFile, raw, "$")
    problems = early + walker.problems
    if config is not None:
        problems = problems + cross_check(config)
    problems = [_with_datasets_having(p, registry) for p in problems]
    # A section the tokenizer run would have filled in is not a problem of its own: the run directory is.
    problems = [p for p in problems if p.path not in inherited]
    errors = [p for p in problems if not p.warning]
    warnings = tuple(p for p in problems if p.warning)
    if errors:
        raise ConfigError([str(p) for p in errors], source=source)
    return LoadedRunFile(config=config, raw=raw, source=source, warnings=warnings)


def _fill_default_quantizer(raw: dict[str, Any], registry: Any) -> None:
    """Start ``[model.quantizer]`` from the backbone's default quantizer table where it applies.

    It applies when the table is absent, has no ``type`` (e.g. from ``--set
    model.quantizer.codebook_size=512``) or names the default's own type: the given keys then
    override keys of the default table. So ``type = "vq"`` under ``vqgan`` keeps the backbone's
    ``beta_placement = "codebook"`` unless the table sets it; a table of another type starts from
    that quantizer's own defaults.
    """
    model = raw.get("model")
    if not isinstance(model, Mapping):
        return
    given = model.get("quantizer")
    if given is not None and not isinstance(given, Mapping):
        return
    backbone = model.get("backbone")
    if not isinstance(backbone, Mapping) or not isinstance(backbone.get("type"), str):
        return
    try:
        spec = registry.get_spec("backbone", backbone["type"])
    except (UnknownComponentError, DuplicateComponentError):
        return  # reported by the walker
    if not isinstance(spec, BackboneSpec) or spec.default_quantizer is None:
        return
    if given is not None and given.get("type", spec.default_quantizer.get("type")) != spec.default_quantizer.get(
        "type"
    ):
        return
    raw["model"] = {**model, "quantizer": {**dict(spec.default_quantizer), **dict(given or {})}}


def load_run_file(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    registry: Any,
    of_run_dir: bool = False,
) -> LoadedRunFile:
    """Read, override and validate a run file against ``registry``. Creates nothing on disk.

    ``lgvq_core.run_file.load_run_file`` does this against the installed plugins. ``of_run_dir``: the
    run file of an existing run directory (resumed, evaluated, loaded), whose weights are its own
    checkpoints and never ``train.init_from``'s again, so a directory named there that is gone is a
    warning, not a problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"$: run file not found: {path}"], source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"$: cannot read run file {path}: {exc}"], source=str(path)) from None
    try:
        raw = parse_toml(text)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=str(path)) from None
    if overrides:
        raw = apply_overrides(raw, overrides, registry, source=str(path))
    gone = _init_from_gone(raw) if of_run_dir else None
    loaded = validate(raw, registry=registry, source=str(path))
    if gone is None:
        return loaded
    note = Problem(
        "$.train.init_from",
        f"{gone} no longer exists; this run's weights are its own checkpoints, so it is not read",
        warning=True,
    )
    return attrs.evolve(loaded, warnings=(*loaded.warnings, note))


def _init_from_gone(raw: dict[str, Any]) -> str | None:
    """``train.init_from`` of an existing run when that directory is gone: dropped from ``raw`` (not read)."""
    train = raw.get("train")
    value = train.get("init_from") if isinstance(train, dict) else None
    if not isinstance(value, str) or Path(value).expanduser().exists():
        return None
    raw["train"] = {k: v for k, v in train.items() if k != "init_from"}
    return value
