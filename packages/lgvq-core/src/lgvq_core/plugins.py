"""Plugin discovery and loading: the ``lgvq`` entry-point group, one error handler per plugin.

Every package, lgvq-core included, registers its components through an entry point::

    [project.entry-points.lgvq]
    backbones = "lgvq_backbones._plugin"

The entry-point name is the plugin's name. A plugin that fails to import is recorded (name,
distribution, version, the exception and where it was raised) and the others keep working, unless
``LGVQ_STRICT_PLUGINS=1``. ``LGVQ_DISABLE_PLUGINS=a,b`` blocks plugins by name.

lgvq-core's test doubles (``tiny-ae``, ``tiny-text``, ``tiny-prior``: the ``testing`` plugin) are opt-in, as
pytest's ``pytester`` is: they load only with ``LGVQ_TEST_COMPONENTS=1`` or when a caller names
the ``testing`` plugin, so a user's ``lgvq list`` never shows them. A test suite that wants them
in subprocesses too sets the variable in its ``conftest.py``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
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
TESTING_ENV = "LGVQ_TEST_COMPONENTS"
#: The opt-in plugin of lgvq-core's test doubles, and its module.
TESTING_PLUGIN = "testing"
TESTING_MODULE = "lgvq_core.testing._plugin"

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
    #: ``file:line`` where the error was raised (the innermost frame outside the import machinery).
    location: str = ""
    #: The hook that raised (``lgvq_backbones``), or ``""`` when the plugin failed to load.
    hook: str = ""

    def describe(self) -> str:
        where = f" in {self.hook}" if self.hook else ""
        at = f" (at {self.location})" if self.location else ""
        return f"plugin {self.name!r} ({self.distribution} {self.version}) failed{where}: {self.error}{at}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def strict_from_env() -> bool:
    return _truthy(os.environ.get(STRICT_ENV))


def testing_from_env() -> bool:
    """Whether ``LGVQ_TEST_COMPONENTS`` opts in to lgvq-core's test doubles."""
    return _truthy(os.environ.get(TESTING_ENV))


def disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _format_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r}) while loading"
    return f"{type(exc).__name__}: {exc}"


#: Frames of these files are the loading machinery, not the plugin's code.
_MACHINERY = ("importlib", "pluggy", os.path.join("lgvq_core", "plugins.py"), os.path.join("lgvq_core", "registry.py"))


def error_location(exc: BaseException) -> str:
    """``file:line`` of the plugin code that raised ``exc`` (``""`` when none is known)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<") and not any(part in frame.filename for part in _MACHINERY)
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _is_testing_entry_point(ep: importlib.metadata.EntryPoint) -> bool:
    return ep.name == TESTING_PLUGIN and ep.value.partition(":")[0] == TESTING_MODULE


def _core_version() -> str:
    try:
        return importlib.metadata.version("lgvq-core")
    except importlib.metadata.PackageNotFoundError:
        return "?"


class LgvqPluginManager(pluggy.PluginManager):
    """A pluggy manager for project ``lgvq`` that remembers where each plugin came from."""

    def __init__(self, strict: bool | None = None) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.strict = strict_from_env() if strict is None else strict
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.disabled: set[str] = set()
        #: Problems that do not stop anything (a misspelled name in ``LGVQ_DISABLE_PLUGINS``).
        self.warnings: list[str] = []

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(
        self,
        disabled: Iterable[str] | None = None,
        only: Iterable[str] | None = None,
        testing: bool | None = None,
    ) -> None:
        """Load every plugin of the ``lgvq`` entry-point group, each inside its own handler.

        :param disabled: plugin names to block (default: ``LGVQ_DISABLE_PLUGINS``).
        :param only: if given, load just these plugin names (test fixtures use it); naming
            ``testing`` here opts in to the test doubles.
        :param testing: load lgvq-core's ``testing`` plugin (default: ``LGVQ_TEST_COMPONENTS``).
        """
        blocked = disabled_from_env() if disabled is None else set(disabled)
        wanted = None if only is None else set(only)
        if testing is None:
            testing = testing_from_env() or (wanted is not None and TESTING_PLUGIN in wanted)
        points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        # An install made before the test doubles became opt-in still declares them as an entry point.
        points = [ep for ep in points if not _is_testing_entry_point(ep)]
        names = {ep.name for ep in points} | {TESTING_PLUGIN}
        for name in sorted(blocked - names):
            close = difflib.get_close_matches(name, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; installed plugins: {', '.join(sorted(names))}"
            self.warnings.append(f"{DISABLE_ENV} names {name!r}, which is not an installed plugin{hint}")
        loaders: list[tuple[str, Any, str, str]] = [(ep.name, ep.load, *_distribution_of(ep)) for ep in points]
        if testing and TESTING_PLUGIN not in {ep.name for ep in points}:
            loaders.append(
                (TESTING_PLUGIN, lambda: importlib.import_module(TESTING_MODULE), "lgvq-core", _core_version())
            )
        for name, load, dist_name, dist_version in sorted(loaders, key=lambda item: item[0]):
            if wanted is not None and name not in wanted:
                continue
            if name in blocked:
                self.disabled.add(name)
                self.set_blocked(name)
                continue
            if name in self.infos:
                other = self.infos[name]
                self._fail(
                    name,
                    dist_name,
                    dist_version,
                    ValueError(
                        f"plugin name {name!r} is registered by both {other.distribution} "
                        f"and {dist_name}; uninstall one of them"
                    ),
                )
                continue
            had_torch = "torch" in sys.modules
            try:
                module = load()
                self.register_plugin(module, name, dist_name, dist_version)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any plugin error is recorded, sys.exit() too
                self._fail(name, dist_name, dist_version, exc)
                continue
            if not had_torch and "torch" in sys.modules:
                module_name = getattr(module, "__name__", name)
                self.warnings.append(
                    f"plugin {name!r} ({dist_name} {dist_version}): importing {module_name} imported torch, which "
                    "makes `lgvq plugins`, `lgvq list` and `lgvq check` slow; import torch only in factory modules "
                    "(the contract test names the import chain)"
                )

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

    def _fail(self, name: str, distribution: str, version: str, exc: BaseException, hook: str = "") -> None:
        failure = PluginFailure(
            name=name,
            distribution=distribution,
            version=version,
            error=_format_exception(exc),
            traceback="".join(traceback.format_exception(exc)),
            location=error_location(exc),
            hook=hook,
        )
        self.failures.append(failure)
        if self.strict:
            raise PluginLoadError(f"{failure.describe()}\n(set {STRICT_ENV}=0 to continue without it)") from exc

    def record_failure(self, name: str, exc: BaseException, hook: str = "") -> None:
        """Record a failure of an already registered plugin (``hook``: the registration hook that raised)."""
        info = self.infos.get(name)
        self._fail(
            name,
            info.distribution if info else "?",
            info.version if info else "?",
            exc,
            hook,
        )

    def info_for(self, plugin: object) -> PluginInfo:
        name = self.get_name(plugin) or repr(plugin)
        return self.infos.get(name, PluginInfo(name, repr(plugin), "?", "?"))


def plugin_names(testing: bool | None = None) -> list[str]:
    """Names of the installed plugins (entry points), with ``testing`` when opted in.

    :param testing: include lgvq-core's test doubles (default: ``LGVQ_TEST_COMPONENTS``).
    """
    testing = testing_from_env() if testing is None else testing
    names = {
        ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if not _is_testing_entry_point(ep)
    }
    return sorted(names | ({TESTING_PLUGIN} if testing else set()))


def plugin_module_name(name: str) -> str:
    """The module plugin ``name`` registers (its entry point's value), for checks that import it afresh."""
    if name == TESTING_PLUGIN and name not in plugin_names(testing=False):
        return TESTING_MODULE
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.value.partition(":")[0]
    raise LookupError(f"no plugin named {name!r} in the {ENTRY_POINT_GROUP!r} entry-point group")


def _distribution_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"
