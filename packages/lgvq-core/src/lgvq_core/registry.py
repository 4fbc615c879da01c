"""The component registry: every spec every loaded plugin returned, explorable like timm's.

>>> from lgvq_core.registry import list_components
>>> list_components("backbone", "vq*")          # doctest: +SKIP
['vqgan', 'vqvae']
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping
from typing import Any

from lgvq_core.config.schema import Component
from lgvq_core.config.walker import structure_component
from lgvq_core.errors import DuplicateComponentError, UnknownComponentError
from lgvq_core.plugins import LgvqPluginManager, PluginFailure
from lgvq_core.providers import install_hint
from lgvq_core.specs import (
    HOOK_FOR_KIND,
    KINDS,
    ComponentImportError,
    ComponentSpec,
    RegisteredComponent,
    normalize_kind,
    normalize_name,
)


def display_kind(kind: str) -> str:
    return kind.replace("_", "-")


class Registry:
    """Components by kind and normalised name, built from a plugin manager's registration hooks."""

    def __init__(self, manager: LgvqPluginManager) -> None:
        self.manager = manager
        self._components: dict[str, dict[str, RegisteredComponent]] = {k: {} for k in KINDS}
        #: kind -> normalised name -> every registration of a name claimed more than once
        self.conflicts: dict[str, dict[str, list[RegisteredComponent]]] = {k: {} for k in KINDS}
        self._collect()

    # -- construction ----------------------------------------------------------------------
    def _collect(self) -> None:
        for kind in KINDS:
            caller = getattr(self.manager.hook, HOOK_FOR_KIND[kind])
            for impl in caller.get_hookimpls():
                info = self.manager.info_for(impl.plugin)
                try:
                    specs = list(impl.function() or ())
                    for spec in specs:
                        if not isinstance(spec, ComponentSpec):
                            raise TypeError(f"{HOOK_FOR_KIND[kind]} returned {spec!r}, not a ComponentSpec")
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported like an import failure
                    self.manager.record_failure(info.name, exc, HOOK_FOR_KIND[kind])
                    continue
                for spec in specs:
                    self._add(
                        RegisteredComponent(
                            kind=kind,
                            spec=spec,
                            plugin=info.name,
                            distribution=info.distribution,
                            version=info.version,
                        )
                    )

    def _add(self, entry: RegisteredComponent) -> None:
        key = normalize_name(entry.spec.name)
        table = self._components[entry.kind]
        if key in self.conflicts[entry.kind]:
            self.conflicts[entry.kind][key].append(entry)
            return
        if key in table:
            first = table.pop(key)
            self.conflicts[entry.kind][key] = [first, entry]
            if self.manager.strict:
                raise DuplicateComponentError(self._conflict_message(entry.kind, key))
            return
        table[key] = entry

    def _conflict_message(self, kind: str, key: str) -> str:
        owners = " and ".join(f"{e.distribution} {e.version} (plugin {e.plugin!r})" for e in self.conflicts[kind][key])
        return (
            f"{display_kind(kind)} {key!r} is provided by both {owners}; uninstall one, or block "
            "one plugin with LGVQ_DISABLE_PLUGINS=<plugin name>"
        )

    # -- queries ---------------------------------------------------------------------------
    @property
    def failures(self) -> list[PluginFailure]:
        return self.manager.failures

    def report(self) -> dict[str, Any]:
        """Plugins, their components, failures, disabled plugins and name conflicts, as plain data
        (``lgvq plugins --json`` and a run directory's ``plugins.json``).

        Each loaded plugin lists its ``components``, the names it claims that another plugin claims
        too (``conflicting``), its other hook implementations (``hooks``) and the errors of its own
        registration hooks (``failed``). The top-level ``failed`` holds every failure, those of
        plugins that did not load included.
        """
        registration = set(HOOK_FOR_KIND.values())
        plugins = []
        for name, info in sorted(self.manager.infos.items()):
            components = {
                display_kind(kind): [e.name for e in self.entries(kind) if e.plugin == name] for kind in KINDS
            }
            conflicting = {
                display_kind(kind): [
                    key for key, claims in self.conflicts[kind].items() if name in {c.plugin for c in claims}
                ]
                for kind in KINDS
            }
            plugin = self.manager.get_plugin(name)
            callers = self.manager.get_hookcallers(plugin) if plugin is not None else None
            hooks = sorted(caller.name for caller in callers or ())
            plugins.append(
                {
                    "name": name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "module": info.module,
                    "components": {k: v for k, v in components.items() if v},
                    "conflicting": {k: v for k, v in conflicting.items() if v},
                    "hooks": [hook for hook in hooks if hook not in registration],
                    "registration_hooks": [hook for hook in hooks if hook in registration],
                    "failed": [_failure_record(f) for f in self.failures if f.name == name and f.hook],
                }
            )
        return {
            "plugins": plugins,
            "failed": [_failure_record(f) for f in self.failures],
            "disabled": sorted(self.manager.disabled),
            "conflicts": self.conflict_messages(),
            "warnings": list(self.manager.warnings),
        }

    def conflict_messages(self) -> list[str]:
        return [self._conflict_message(kind, key) for kind in KINDS for key in self.conflicts[kind]]

    def entries(self, kind: str) -> list[RegisteredComponent]:
        kind = normalize_kind(kind)
        return [self._components[kind][k] for k in sorted(self._components[kind])]

    def list_components(self, kind: str, pattern: str = "*") -> list[str]:
        """Names of the components of ``kind`` matching a shell-style ``pattern``."""
        kind = normalize_kind(kind)
        norm_pattern = normalize_name(pattern)
        return [
            entry.spec.name
            for key, entry in sorted(self._components[kind].items())
            if fnmatch.fnmatchcase(key, norm_pattern)
        ]

    def get(self, kind: str, name: str, path: str = "$") -> RegisteredComponent:
        """The registered component ``name`` of ``kind``; ``path`` says where it was asked for."""
        kind = normalize_kind(kind)
        key = normalize_name(name)
        if key in self.conflicts[kind]:
            raise DuplicateComponentError(f"{path}: " + self._conflict_message(kind, key))
        try:
            return self._components[kind][key]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(kind, name, path)) from None

    def get_spec(self, kind: str, name: str, path: str = "$") -> ComponentSpec:
        return self.get(kind, name, path).spec

    def unknown_message(self, kind: str, name: str, path: str = "$") -> str:
        kind = normalize_kind(kind)
        available = sorted(self._components[kind])
        message = f"{path}: unknown {display_kind(kind)} {name!r}"
        close = difflib.get_close_matches(normalize_name(name), available, n=3, cutoff=0.5)
        if close:
            message += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        else:
            message += "."
        message += f" Available: {', '.join(available)}." if available else f" No {display_kind(kind)} is installed."
        key = normalize_name(name)
        for other, table in RUN_FILE_TABLES.items():  # the right name under the wrong table
            if other != kind and key in self._components[other]:
                what = "downstream model" if other == "downstream" else display_kind(other)
                message += f" {name!r} is a {what}: it belongs under {table.format(name=name)}."
                return message
        message += install_hint(kind, name)
        if self.failures:
            failed = "; ".join(f.describe() for f in self.failures)
            message += f" Note: {failed} (it may provide this component)."
        return message

    def build(self, kind: str, table: Mapping[str, Any] | Any, path: str = "$", context: Any = None):
        """Build a component from a run-file table (``{"type": ..., ...}``) or a structured one.

        Raises :class:`~lgvq_core.errors.ConfigError` listing every problem of the table.
        """

        component = table
        if not isinstance(table, Component):
            component = structure_component(kind, table, path, registry=self)
        entry = self.get(kind, component.type, f"{path}.type")
        try:
            factory = entry.spec.load_factory()
        except ComponentImportError as exc:
            raise ComponentImportError(
                f"{path}.type: plugin {entry.plugin!r} ({entry.distribution} {entry.version}), {exc}"
            ) from None
        built = factory(component.config, context)
        if kind == "dataset" and hasattr(built, "annotation_index"):
            built.annotation_index = (
                self.datasets_with
            )  # its missing-annotation errors name the datasets that have them
        return built

    def annotation_kinds(self, dataset_type: str) -> frozenset[str]:
        """The annotation kinds registered dataset ``dataset_type`` declares (no dataset is built)."""
        return frozenset(getattr(self.get_spec("dataset", dataset_type).config_cls, "annotation_kinds", frozenset()))

    def datasets_with(self, kind: str) -> list[str]:
        """Names of the registered datasets that declare annotation ``kind``, sorted."""
        return sorted(
            entry.name
            for entry in self.entries("dataset")
            if kind in getattr(entry.spec.config_cls, "annotation_kinds", frozenset())
        )


#: Where a component of each kind is named in a run file.
RUN_FILE_TABLES: dict[str, str] = {
    "backbone": '[model.backbone] type = "{name}"',
    "quantizer": '[model.quantizer] type = "{name}"',
    "text_encoder": '[text_encoder] type = "{name}"',
    "alignment_loss": '[[alignment]] type = "{name}"',
    "dataset": '[data] type = "{name}"',
    "task": '[[tasks]] type = "{name}"',
    "callback": '[[callbacks]] type = "{name}"',
    "downstream": '[downstream] type = "{name}" (a run file with [tokenizer] run_dir)',
    "logger": '[[loggers]] type = "{name}"',
    "importer": "`lgvq import {name} CHECKPOINT OUT_RUN_DIR`",
    "exporter": "`lgvq export RUN_DIR --format {name} OUT`",
}


def _failure_record(failure: PluginFailure) -> dict[str, str]:
    return {
        "name": failure.name,
        "distribution": failure.distribution,
        "version": failure.version,
        "error": failure.error,
        "hook": failure.hook,
        "location": failure.location,
    }


# The process-wide plugin manager and its registry: one pair, one accessor each.
_MANAGER: LgvqPluginManager | None = None
_REGISTRY: Registry | None = None


def get_plugin_manager() -> LgvqPluginManager:
    """The process-wide plugin manager, loading the ``lgvq`` entry points on first use."""
    global _MANAGER
    if _MANAGER is None:
        manager = LgvqPluginManager()
        manager.load_entry_points()
        _MANAGER = manager
    return _MANAGER


def get_registry() -> Registry:
    """The registry of the process-wide plugin manager (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry(get_plugin_manager())
    return _REGISTRY


def set_plugin_manager(manager: LgvqPluginManager | None) -> None:
    """Replace (or with ``None`` forget) the process-wide plugin manager and its registry."""
    global _MANAGER, _REGISTRY
    _MANAGER = manager
    _REGISTRY = None


def list_components(kind: str, pattern: str = "*") -> list[str]:
    """Names of the installed components of ``kind`` matching ``pattern`` (``"vq*"``)."""
    return get_registry().list_components(kind, pattern)


def get_spec(kind: str, name: str, path: str = "$") -> ComponentSpec:
    """The spec of component ``name`` of ``kind``; unknown names get suggestions."""
    return get_registry().get_spec(kind, name, path)


def build(kind: str, table: Mapping[str, Any] | Any, path: str = "$", context: Any = None) -> Any:
    """Validate ``table`` against the component's config class and call its factory."""
    return get_registry().build(kind, table, path, context)
