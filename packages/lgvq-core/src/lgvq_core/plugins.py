"""Plugin discovery and loading: the ``lgvq`` entry-point group, one error handler per plugin.

Every package, lgvq-core included, registers its components through an entry point::

    [project.entry-points.lgvq]
    backbones = "lgvq_backbones._plugin"

The entry-point name is the plugin's name. A plugin that fails to import is recorded (name,
distribution, version, the exception) and the others keep working, unless
``LGVQ_STRICT_PLUGINS=1``. ``LGVQ_DISABLE_PLUGINS=a,b`` blocks plugins by name.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import traceback
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import attrs
import pluggy

from lgvq_core import hookspecs
from lgvq_core.errors import PluginLoadError

ENTRY_POINT_GROUP = "lgvq"
STRICT_ENV = "LGVQ_STRICT_PLUGINS"
DISABLE_ENV = "LGVQ_DISABLE_PLUGINS"

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its name, the module registered, and where it came from."""

    name: str
    module: str
    distribution: str
    version: str


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or whose registration hook raised."""

    name: str
    distribution: str
    version: str
    error: str
    traceback: str = attrs.field(repr=False)

    def describe(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version}) failed: {self.error}"


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _format_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r}) while loading"
    return f"{type(exc).__name__}: {exc}"


class LgvqPluginManager(pluggy.PluginManager):
    """A pluggy manager for project ``lgvq`` that remembers where each plugin came from."""

    def __init__(self, strict: bool | None = None) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.strict = strict_from_env() if strict is None else strict
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.disabled: set[str] = set()

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(
        self,
        disabled: Iterable[str] | None = None,
        only: Iterable[str] | None = None,
    ) -> None:
        """Load every plugin of the ``lgvq`` entry-point group, each inside its own handler.

        :param disabled: plugin names to block (default: ``LGVQ_DISABLE_PLUGINS``).
        :param only: if given, load just these plugin names (test fixtures use it).
        """
        blocked = disabled_from_env() if disabled is None else set(disabled)
        wanted = None if only is None else set(only)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if wanted is not None and ep.name not in wanted:
                continue
            if ep.name in blocked:
                self.disabled.add(ep.name)
                self.set_blocked(ep.name)
                continue
            dist_name, dist_version = _distribution_of(ep)
            if ep.name in self.infos:
                other = self.infos[ep.name]
                self._fail(
                    ep.name,
                    dist_name,
                    dist_version,
                    ValueError(
                        f"plugin name {ep.name!r} is registered by both {other.distribution} "
                        f"and {dist_name}; uninstall one of them"
                    ),
                )
                continue
            try:
                module = ep.load()
                self.register_plugin(module, ep.name, dist_name, dist_version)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any plugin error is recorded, sys.exit() too
                self._fail(ep.name, dist_name, dist_version, exc)

    def register_plugin(self, module: ModuleType | Any, name: str, distribution: str, version: str) -> None:
        """Register an already imported plugin object under ``name``.

        A function named like a hook that no hookspec declares (``lgvq_backbone``) is an error:
        pluggy would otherwise accept it and never call it.
        """
        unknown = sorted(
            attr
            for attr in dir(module)
            if attr.startswith("lgvq_") and callable(getattr(module, attr, None)) and not hasattr(hookspecs, attr)
        )
        if unknown:
            known = [h for h in dir(hookspecs) if h.startswith("lgvq_")]
            hints = []
            for attr in unknown:
                close = difflib.get_close_matches(attr, known, n=1)
                hints.append(attr + (f" (did you mean {close[0]}?)" if close else ""))
            raise ValueError(f"unknown hook(s): {', '.join(hints)}; see lgvq_core.hookspecs for the hooks")
        self.register(module, name=name)
        module_name = getattr(module, "__name__", type(module).__name__)
        self.infos[name] = PluginInfo(name, module_name, distribution, version)

    def _fail(self, name: str, distribution: str, version: str, exc: BaseException) -> None:
        failure = PluginFailure(
            name=name,
            distribution=distribution,
            version=version,
            error=_format_exception(exc),
            traceback="".join(traceback.format_exception(exc)),
        )
        self.failures.append(failure)
        if self.strict:
            raise PluginLoadError(f"{failure.describe()}\n(set {STRICT_ENV}=0 to continue without it)") from exc

    def record_failure(self, name: str, exc: BaseException) -> None:
        """Record a failure of an already registered plugin (e.g. a registration hook raised)."""
        info = self.infos.get(name)
        self._fail(
            name,
            info.distribution if info else "?",
            info.version if info else "?",
            exc,
        )

    def info_for(self, plugin: object) -> PluginInfo:
        name = self.get_name(plugin) or repr(plugin)
        return self.infos.get(name, PluginInfo(name, repr(plugin), "?", "?"))


def _distribution_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"
