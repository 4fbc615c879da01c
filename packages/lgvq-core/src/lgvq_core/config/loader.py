"""TOML run file -> validated attrs objects, reporting every problem at once.

The file is parsed with ``tomli`` and walked table by table. Leaf values are structured with a
strict ``cattrs`` converter (no silent ``0.5 -> 0`` or ``"yes" -> True``); component tables are
dispatched by their ``type`` key to the config class of the plugin that registered that name.
Each problem becomes one ``$.path.to.key: message`` line.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import tomli

from lgvq_core.config.downstream import downstream_cross_check, fill_from_tokenizer_run, is_downstream
from lgvq_core.config.problems import Problem
from lgvq_core.config.schema import Component, DownstreamRunFile, RunFile
from lgvq_core.errors import ConfigError, DuplicateComponentError, UnknownComponentError
from lgvq_core.specs import BackboneSpec, normalize_kind


@attrs.frozen
class LoadedRunFile:
    """A validated run file: the structured config (a tokenizer or a downstream run), the raw tables, warnings."""

    config: RunFile | DownstreamRunFile
    raw: dict[str, Any]
    source: str
    warnings: tuple[Problem, ...] = ()


# ------------------------------------------------------------------------------------------
# strict leaf structuring
# ------------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_type_name(value)} {value!r}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_type_name(value)} {value!r}")
    return float(value)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_type_name(value)} {value!r}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    return converter


CONVERTER = make_converter()


@functools.cache
def _fields(cls: type) -> tuple[attrs.Attribute, ...]:
    attrs.resolve_types(cls)
    return attrs.fields(cls)


def config_fields(cls: type) -> tuple[attrs.Attribute, ...]:
    """The attrs fields of a config class with their annotations resolved."""
    return _fields(cls)


def split_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            inner = args[0] if len(args) == 1 else typing.Union[tuple(args)]
            return True, inner
    return False, tp


def describe_type(tp: Any) -> str:
    """A short human name for a field type (``int``, ``"a" | "b"``, ``list[float]``)."""
    optional, inner = split_optional(tp)
    suffix = " | None" if optional else ""
    if typing.get_origin(inner) is Literal:
        return " | ".join(repr(v) if not isinstance(v, str) else f'"{v}"' for v in typing.get_args(inner)) + suffix
    if isinstance(inner, type) and not typing.get_args(inner):
        return inner.__name__ + suffix
    return str(inner).replace("typing.", "") + suffix


def _structure_leaf(value: Any, tp: Any, path: str) -> tuple[Any, list[Problem]]:
    optional, inner = split_optional(tp)
    if value is None:
        if optional:
            return None, []
        return None, [Problem(path, "must not be empty")]
    if typing.get_origin(inner) is Literal:
        choices = typing.get_args(inner)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value, []
        message = (
            "must be one of "
            + ", ".join(f'"{c}"' if isinstance(c, str) else repr(c) for c in choices)
            + f", got {value!r}"
        )
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.5)
            if close:
                message += f'; did you mean "{close[0]}"?'
        return None, [Problem(path, message)]
    if typing.get_origin(inner) in (list, tuple) and not isinstance(value, (list, tuple)):
        # cattrs would iterate a string or a table into a list: "abc" -> ["a", "b", "c"]
        return None, [Problem(path, f"expected an array, got {_type_name(value)} {value!r}")]
    try:
        return CONVERTER.structure(value, inner), []
    except (cattrs.ClassValidationError, cattrs.IterableValidationError) as exc:
        lines = cattrs.transform_error(exc, path="", format_exception=lambda e, t: str(e))
        problems = []
        for line in lines:
            message, _, sub = line.rpartition(" @ ")
            problems.append(Problem(path + sub.lstrip("$"), message or line))
        return None, problems
    except Exception as exc:  # noqa: BLE001 - every structuring error is a config problem
        return None, [Problem(path, str(exc) or type(exc).__name__)]


def default_problems(cls: type, path: str = "$") -> list[Problem]:
    """Defaults of ``cls`` that are not values of their declared type (``option("8")`` on an ``int``).

    Such a default would pass ``lgvq check`` and fail deep inside the component; it is the config
    class's fault, so the message says to fix the class.
    """
    problems = []
    for field in config_fields(cls):
        default = field.default
        if default is attrs.NOTHING or isinstance(default, attrs.Factory) or field.metadata.get("component"):  # type: ignore[arg-type]
            continue
        if attrs.has(split_optional(field.type)[1]):
            continue
        _, found = _structure_leaf(default, field.type, f"{path}.{field.name}")
        for problem in found:
            problems.append(
                Problem(
                    problem.path,
                    f"the default {default!r} of {cls.__module__}.{cls.__qualname__}.{field.name} is not a "
                    f"{describe_type(field.type)} ({problem.message}); fix the config class's option(...)",
                )
            )
    return problems


# ------------------------------------------------------------------------------------------
# table walking
# ------------------------------------------------------------------------------------------
class _Walker:
    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.problems: list[Problem] = []

    def table(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            self.problems.append(Problem(path, f"expected a table, got {_type_name(data)} {data!r}"))
            return None
        fields = config_fields(cls)
        by_name = {f.name: f for f in fields}
        ok = True
        for problem in default_problems(cls, path):
            if problem.path.rpartition(".")[2] not in data:
                ok = False
                self.problems.append(problem)
        for key in data:
            if key not in by_name:
                ok = False
                self.problems.append(Problem(f"{path}.{key}", self._unknown_key(key, by_name)))
        kwargs: dict[str, Any] = {}
        for field in fields:
            sub = f"{path}.{field.name}"
            if field.name not in data:
                if field.default is attrs.NOTHING:
                    ok = False
                    self.problems.append(Problem(sub, self._missing(field)))
                continue
            before = len(self.problems)
            value = self.value(field, data[field.name], sub)
            if len(self.problems) > before:
                ok = False
            else:
                kwargs[field.name] = value
        # With other problems in the table, the well-typed keys it gives are still validated
        # (defaults standing in for the bad ones), so every problem is reported at once.
        complete = ok
        if any(f.default is attrs.NOTHING and f.name not in kwargs for f in fields):
            return None
        with_validators_off = attrs.validators.get_disabled()
        attrs.validators.set_disabled(True)
        try:
            instance = cls(**kwargs)
        except Exception as exc:  # noqa: BLE001 - a custom __init__ or converter failed
            if complete:
                self.problems.append(Problem(path, str(exc)))
            return None
        finally:
            attrs.validators.set_disabled(with_validators_off)
        for field in fields:
            if field.validator is None or (not complete and field.name not in kwargs):
                continue
            try:
                field.validator(instance, field, getattr(instance, field.name))
            except Exception as exc:  # noqa: BLE001 - validator messages are kept as they are
                ok = False
                self.problems.append(Problem(f"{path}.{field.name}", str(exc)))
        return instance if ok else None

    def _missing(self, field: attrs.Attribute) -> str:
        kind = field.metadata.get("component")
        if kind is None:
            return f"missing required key ({describe_type(field.type)})"
        names = ", ".join(self.registry.list_components(kind)) or "none is installed"
        return f"missing required table (a {kind.replace('_', '-')} with type = one of: {names})"

    @staticmethod
    def _unknown_key(key: str, by_name: Mapping[str, attrs.Attribute]) -> str:
        message = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, list(by_name), n=1, cutoff=0.6)
        if close:
            return message + f"; did you mean {close[0]!r}?"
        return message + "; allowed keys: " + ", ".join(by_name)

    def value(self, field: attrs.Attribute, value: Any, path: str) -> Any:
        kind = field.metadata.get("component")
        optional, inner = split_optional(field.type)
        if kind is not None:
            if typing.get_origin(inner) is list:
                if not isinstance(value, list):
                    self.problems.append(
                        Problem(path, f"expected an array of tables ([[{path[2:]}]]), got {_type_name(value)}")
                    )
                    return None
                return [self.component(kind, item, f"{path}[{i}]") for i, item in enumerate(value)]
            return self.component(kind, value, path)
        if attrs.has(inner):
            return self.table(inner, value, path)
        result, problems = _structure_leaf(value, field.type, path)
        self.problems.extend(problems)
        return result

    def component(self, kind: str, data: Any, path: str) -> Component | None:
        if not isinstance(data, Mapping):
            self.problems.append(Problem(path, f"expected a table, got {_type_name(data)} {data!r}"))
            return None
        name = data.get("type")
        if name is None:
            available = ", ".join(self.registry.list_components(kind))
            self.problems.append(Problem(f"{path}.type", f"missing; choose one of: {available}"))
            return None
        if not isinstance(name, str):
            self.problems.append(Problem(f"{path}.type", f"expected a string, got {_type_name(name)}"))
            return None
        try:
            entry = self.registry.get(kind, name, f"{path}.type")
        except (UnknownComponentError, DuplicateComponentError) as exc:
            message = str(exc)
            prefix = f"{path}.type: "
            self.problems.append(
                Problem(f"{path}.type", message[len(prefix) :] if message.startswith(prefix) else message)
            )
            return None
        options = {k: v for k, v in data.items() if k != "type"}
        config = self.table(entry.spec.config_cls, options, path)
        if config is None:
            return None
        return Component(type=entry.spec.name, config=config)


def structure_component(kind: str, table: Mapping[str, Any], path: str = "$", *, registry: Any) -> Component:
    """Validate one component table against ``registry``; raise :class:`ConfigError` with every problem.

    ``lgvq_core.registry.structure_component`` does this against the installed plugins.
    """
    walker = _Walker(registry)
    component = walker.component(normalize_kind(kind), table, path)
    if walker.problems or component is None:
        raise ConfigError([str(p) for p in walker.problems])
    return component


# ------------------------------------------------------------------------------------------
# cross-field checks
# ------------------------------------------------------------------------------------------
def _component_paths(run: RunFile | DownstreamRunFile) -> list[tuple[str, Component]]:
    if isinstance(run, DownstreamRunFile):
        found = [("$.downstream", run.downstream), ("$.data", run.data)]
    else:
        found = [("$.model.backbone", run.model.backbone), ("$.data", run.data)]
        if run.model.quantizer is not None:
            found.append(("$.model.quantizer", run.model.quantizer))
    if run.text_encoder is not None:
        found.append(("$.text_encoder", run.text_encoder))
    for section in ("alignment", "tasks", "callbacks"):
        found.extend((f"$.{section}[{i}]", c) for i, c in enumerate(getattr(run, section, ())))
    return found


def _code_vit_heads(run: RunFile | DownstreamRunFile) -> list[Problem]:
    """The code ViT's heads must divide its width: ``[code_vit] width``, else the codes' (the quantizer's ``dim``)."""
    if not isinstance(run, RunFile) or not run.alignment:
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


def cross_check(run: RunFile | DownstreamRunFile) -> list[Problem]:
    """Checks that need more than one table. Components add their own with ``cross_check``."""
    problems: list[Problem] = []
    if isinstance(run, RunFile) and run.alignment and run.text_encoder is None:
        problems.append(Problem("$.text_encoder", "missing: the [[alignment]] losses need a text encoder"))
    seen: dict[str, int] = {}
    if isinstance(run, DownstreamRunFile):
        problems += downstream_cross_check(run)
    for i, loss in enumerate(getattr(run, "alignment", ())):
        if loss.type in seen:
            problems.append(
                Problem(f"$.alignment[{i}].type", f"{loss.type!r} is already given as $.alignment[{seen[loss.type]}]")
            )
        seen.setdefault(loss.type, i)
    problems.extend(_code_vit_heads(run))
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


def validate(raw: Mapping[str, Any], *, registry: Any, source: str = "<run file>") -> LoadedRunFile:
    """Structure and check a parsed run file; raise :class:`ConfigError` listing every problem."""
    raw = dict(raw)
    walker = _Walker(registry)
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
) -> LoadedRunFile:
    """Read, override and validate a run file against ``registry``. Creates nothing on disk.

    ``lgvq_core.registry.load_run_file`` does this against the installed plugins.
    """
    from lgvq_core.config.overrides import apply_overrides

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
    return validate(raw, registry=registry, source=str(path))
