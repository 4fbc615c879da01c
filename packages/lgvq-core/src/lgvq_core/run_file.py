"""A run file against the installed plugins: the config package's loaders, handed the process-wide
registry. (:mod:`lgvq_core.config` is never handed anything else implicitly: it takes its registry
as an argument, and :mod:`lgvq_core.registry` knows nothing of run files.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lgvq_core.config import loader, walker
from lgvq_core.registry import get_registry


def load_run_file(path, overrides: list[str] | None = None, *, of_run_dir: bool = False):
    """Read, override and validate a run file against the installed plugins; creates nothing.

    ``of_run_dir``: the ``resolved.toml`` of an existing run (resumed, evaluated, loaded), which never
    reads ``train.init_from`` again.
    """
    return loader.load_run_file(path, overrides, registry=get_registry(), of_run_dir=of_run_dir)


def validate_run_file(raw: Mapping[str, Any], source: str = "<run file>"):
    """Structure and check a parsed run file against the installed plugins."""
    return loader.validate(raw, registry=get_registry(), source=source)


def structure_component(kind: str, table: Mapping[str, Any], path: str = "$"):
    """Validate one component table against the installed plugins."""
    return walker.structure_component(kind, table, path, registry=get_registry())
