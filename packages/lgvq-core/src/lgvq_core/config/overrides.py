"""``--set a.b=c`` command-line overrides, typed by the schema.

The value is read as a TOML value (``3``, ``1e-4``, ``true``, ``[0.5, 0.9]``, ``{type = "vq"}``);
when the schema says the key is a string, the text is taken as it is (``--set run.name=123``).
Array-of-table entries are addressed by index: ``alignment.0.weight=0.01`` or ``alignment[0].weight``.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import tomli

from lgvq_core.config.schema import RunFile
from lgvq_core.config.walker import config_fields, split_optional
from lgvq_core.errors import ConfigError, DuplicateComponentError, UnknownComponentError

_INDEX = re.compile(r"\[(\d+)\]")


def split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for part in _INDEX.sub(r".\1", key).split("."):
        if not part:
            raise ValueError(f"empty part in key {key!r}")
        parts.append(int(part) if part.isdigit() else part)
    return parts


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (``false``, ``1e-4``, ``[1, 2]``), else the text itself."""
    try:
        return tomli.loads(f"v = {text}")["v"]
    except tomli.TOMLDecodeError:
        return text


def option_pairs(pairs: list[str], example: str) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs of a command's component options as a table (values read by
    :func:`parse_value`); a pair without ``=`` is a :class:`ConfigError` (every one listed)."""
    table: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {pair!r}: expected KEY=VALUE, e.g. --set {example}")
            continue
        table[key.strip()] = parse_value(value.strip())
    if problems:
        raise ConfigError(problems)
    return table


def _is_string_field(parts: list[str | int], raw: Mapping[str, Any], registry: Any) -> bool:
    """Whether the schema types the key at ``parts`` as a string (or a choice of strings)."""
    cls: Any = RunFile
    node: Any = raw
    i = 0
    while i < len(parts):
        part = parts[i]
        if not isinstance(part, str) or cls is None:
            return False
        by_name = {f.name: f for f in config_fields(cls)}
        field = by_name.get(part)
        if field is None:
            return False
        node = node.get(part) if isinstance(node, Mapping) else None
        kind = field.metadata.get("component")
        _, tp = split_optional(field.type)
        if kind is not None:
            if typing.get_origin(tp) is list:
                i += 1
                if i >= len(parts) or not isinstance(parts[i], int):
                    return False
                node = node[parts[i]] if isinstance(node, list) and parts[i] < len(node) else None
            if i + 1 < len(parts) and parts[i + 1] == "type":
                return True
            name = node.get("type") if isinstance(node, Mapping) else None
            if not isinstance(name, str):
                return False
            try:
                cls = registry.get_spec(kind, name).config_cls
            except (UnknownComponentError, DuplicateComponentError):
                return False
        elif attrs.has(tp):
            cls = tp
        else:
            if i != len(parts) - 1:
                return False
            if tp is str:
                return True
            return typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp))
        i += 1
    return False


def apply_overrides(
    raw: Mapping[str, Any], overrides: list[str], registry: Any, source: str = "--set"
) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` override applied."""
    result = copy.deepcopy(dict(raw))
    problems: list[str] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            where = f"$.{key}" if key and not sep else "$"
            problems.append(f"{where}: --set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=3")
            continue
        try:
            parts = split_key(key)
        except ValueError as exc:
            problems.append(f"$: --set {item!r}: {exc}")
            continue
        value = text if _is_string_field(parts, result, registry) else parse_value(text)
        node: Any = result
        path = "$"
        try:
            for part, nxt in zip(parts[:-1], parts[1:], strict=True):
                path += f"[{part}]" if isinstance(part, int) else f".{part}"
                if isinstance(part, int):
                    if not isinstance(node, list) or part >= len(node):
                        raise KeyError(
                            f"{path}: no such entry (the run file has {len(node) if isinstance(node, list) else 0})"
                        )
                    node = node[part]
                    continue
                if part not in node:
                    node[part] = [] if isinstance(nxt, int) else {}
                node = node[part]
                if not isinstance(node, (dict, list)):
                    raise KeyError(f"{path}: is a value, not a table")
            last = parts[-1]
            if isinstance(last, int):
                if not isinstance(node, list) or last >= len(node):
                    raise KeyError(f"{path}[{last}]: no such entry")
                node[last] = value
            elif isinstance(node, dict):
                node[last] = value
            else:
                raise KeyError(f"{path}: is not a table")
        except KeyError as exc:
            where, _, message = str(exc.args[0]).partition(": ")
            problems.append(f"{where}: --set {item!r}: {message}")
    if problems:
        raise ConfigError(problems, source=source)
    return result
