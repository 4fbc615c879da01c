"""The generic half of reading a run file: attrs config classes filled from TOML tables, strictly.

Leaf values are structured with a strict ``cattrs`` converter (no silent ``0.5 -> 0`` or
``"yes" -> True``); unknown keys get a "did you mean"; component tables are dispatched by their
``type`` key to the config class a plugin registered under that name. Every problem becomes one
``$.path.to.key: message`` :class:`Problem`. Nothing here knows LG-VQ: the run file's own rules
(cross-field checks, default quantizers, downstream runs) are in :mod:`lgvq_core.config.loader`.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs

from lgvq_core.config.problems import Problem
from lgvq_core.config.schema import Component
from lgvq_core.errors import ConfigError, DuplicateComponentError, UnknownComponentError
from lgvq_core.specs import normalize_kind


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


def structure_leaf(value: Any, tp: Any, path: str) -> tuple[Any, list[Problem]]:
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
        _, found = structure_leaf(default, field.type, f"{path}.{field.name}")
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
class Walker:
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
        result, problems = structure_leaf(value, field.type, path)
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

    ``lgvq_core.run_file.structure_component`` does this against the installed plugins.
    """
    walker = Walker(registry)
    component = walker.component(normalize_kind(kind), table, path)
    if walker.problems or component is None:
        raise ConfigError([str(p) for p in walker.problems])
    return component
