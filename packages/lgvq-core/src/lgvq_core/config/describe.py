"""Human and TOML renderings of config classes: ``lgvq schema`` and ``resolved.toml``."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from lgvq_core.config.fields import field_doc
from lgvq_core.config.schema import Component
from lgvq_core.config.walker import config_fields, describe_type


def schema_rows(cls: type) -> list[dict[str, str]]:
    """One row per field: name, type, default, doc."""
    rows = []
    for field in config_fields(cls):
        if field.default is attrs.NOTHING:
            default = "(required)"
        elif field.default is None:
            default = "(unset)"
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            value = field.default.factory()
            default = "(table)" if attrs.has(type(value)) else _shown(value)
        else:
            default = _shown(field.default)
        rows.append(
            {"name": field.name, "type": describe_type(field.type), "default": default, "doc": field_doc(field)}
        )
    return rows


def _shown(value: Any) -> str:
    """A default as TOML, or as Python when TOML cannot hold it (the contract flags such a field)."""
    try:
        return toml_value(value)
    except TypeError:
        return f"{value!r} (not a TOML value)"


def format_schema(kind: str, name: str, summary: str, cls: type) -> str:
    rows = schema_rows(cls)
    lines = [f"{kind.replace('_', '-')} {name!r}: {summary}", f"config class: {cls.__module__}.{cls.__qualname__}", ""]
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        lines.append(f"  {r['name']:<{width}}  {r['type']}  = {r['default']}")
        if r["doc"]:
            lines.append(f"  {'':<{width}}    {r['doc']}")
    if not rows:
        lines.append("  (no options)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# TOML writing (a small writer for the value types config classes use)
# ------------------------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    if value is None:
        return '"none"'  # never written: None keys are skipped; shown only by schema
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def unstructure(obj: Any) -> Any:
    """A config object as plain data (components as tables with their ``type``)."""
    if isinstance(obj, Component):
        return {"type": obj.type, **unstructure(obj.config)}
    if attrs.has(type(obj)):
        return {f.name: unstructure(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items()}
    return obj


def dumps_toml(data: dict[str, Any]) -> str:
    """Write nested plain data as TOML (tables, arrays of tables, inline values). ``None`` is omitted."""
    out: list[str] = []
    _write_table(out, [], data)
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _write_table(out: list[str], prefix: list[str], data: dict[str, Any]) -> None:
    scalars = [(k, v) for k, v in data.items() if v is not None and not isinstance(v, dict) and not _is_table_array(v)]
    for key, value in scalars:
        out.append(f"{_key(key)} = {toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            name = ".".join(_key(p) for p in [*prefix, key])
            out.append("")
            out.append(f"[{name}]")
            _write_table(out, [*prefix, key], value)
        elif _is_table_array(value):
            name = ".".join(_key(p) for p in [*prefix, key])
            for item in value:
                out.append("")
                out.append(f"[[{name}]]")
                _write_table(out, [*prefix, key], item)
