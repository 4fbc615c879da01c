"""The plugin contract: what every lgvq plugin promises, as a test suite it runs on itself.

In a plugin package's tests::

    from lgvq_core.testing.contract import PluginContract

    class TestMyPlugin(PluginContract):
        plugin = "my-plugin"  # the entry-point name under [project.entry-points.lgvq]

or without writing a test file: ``python -m lgvq_core.testing.contract my-plugin [more plugins]``.

The suite checks that the plugin

- loads through its entry point, and its registration hooks return spec records;
- imports without torch: its plugin module, its registration hooks and its config modules
  leave ``torch`` out of ``sys.modules`` (checked in a fresh interpreter);
- implements only known hooks (a misspelled ``lgvq_backbone`` fails), each marked with
  ``@hookimpl``, with argument names of the hookspec and no keyword-only or default arguments;

and that each component it registers

- has a complete spec (name, one-line summary, attrs config class, ``"module:attr"`` factory);
- has a name no other installed plugin uses for the same kind;
- documents every config field (``option(..., doc)``), declares defaults of the declared types
  (``option("8")`` on an ``int`` fails), and renders in ``lgvq schema``;
- has a config that survives a trip through TOML and rejects an unknown key; a backbone's
  ``default_quantizer`` table is a valid quantizer table;
- has an importable factory, and builds on CPU into the right kind of object, which then works
  on a tiny input (a backbone reconstructs, a quantizer quantizes, a text encoder encodes, an
  alignment loss returns a finite scalar, a dataset yields an item). A quantizer is held to
  more, because its mistakes otherwise surface far away (an IndexError inside the relation loss, a
  usage of 0): integer indices within ``[0, codebook_size)``, a ``codebook`` of shape K×D,
  ``decode_indices(indices)`` equal to ``quant``, a gradient reaching the input through ``quant``,
  and the same output twice in eval mode.

Conventions a config class may follow for the build check (all optional, none imports torch at
module level):

``contract_config()`` (classmethod)
    Returns a small instance to build (default: ``cls()``). Required when the class has
    required keys, and useful to keep a big model small (``ch = 32``).
``contract_context(context)`` (classmethod)
    Receives the :class:`~lgvq_core.context.BuildContext` the suite made for the component's kind
    (see :func:`default_context`) and returns the one to build with, e.g. with a different
    quantizer or image size.
``contract_skip_build: ClassVar[str]``
    Why the component cannot be built without external data (a dataset read from disk, a
    checkpoint only a user has). The build check is then skipped with this reason, visibly.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy
import pytest
import tomli

from lgvq_core import hookspecs
from lgvq_core.config.describe import dumps_toml, format_schema, unstructure
from lgvq_core.config.fields import field_doc
from lgvq_core.config.walker import config_fields, default_problems, structure_component
from lgvq_core.context import BuildContext
from lgvq_core.contracts import ContractError
from lgvq_core.downstream import FrozenTokenizer, check_downstream_model
from lgvq_core.errors import ConfigError
from lgvq_core.plugins import ENTRY_POINT_GROUP, LgvqPluginManager, plugin_module_name, plugin_names
from lgvq_core.registry import Registry
from lgvq_core.specs import HOOK_FOR_KIND, BackboneSpec, ComponentSpec, RegisteredComponent, normalize_name
from lgvq_core.tasks import check_task

#: Captions the build check encodes and hands out as ``context.train_captions``.
CAPTIONS: tuple[str, ...] = (
    "a red square above a blue circle",
    "two green triangles on a white background",
    "a small yellow star",
    "a large purple circle next to a red square",
)

#: Image side of the build check: small, and divisible by the usual downsampling factors.
IMAGE_SIZE = 32

#: An option name no config class has, for the unknown-key check.
UNKNOWN_KEY = "contract_unknown_key"


# ------------------------------------------------------------------------------------------
# the plugin as a whole
# ------------------------------------------------------------------------------------------
def hook_names() -> set[str]:
    """Names of every lgvq hookspec."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, marker)}


def plugin_module(plugin: str) -> str:
    """The module ``plugin`` registers: its entry point's value (lgvq-core's opt-in ``testing`` included)."""
    names = plugin_names(testing=True)
    if plugin not in names:
        raise ContractError(
            f"no plugin named {plugin!r} in the {ENTRY_POINT_GROUP!r} entry-point group; installed plugins: "
            f"{', '.join(names) or 'none'}. Declare it in pyproject.toml as "
            f'[project.entry-points.{ENTRY_POINT_GROUP}] {plugin} = "your_package._plugin" and reinstall '
            "the package (pip install -e .)"
        )
    return plugin_module_name(plugin)


def load_plugin(plugin: str) -> LgvqPluginManager:
    """A strict plugin manager holding ``plugin`` alone: raises if it cannot be loaded."""
    plugin_module(plugin)
    manager = LgvqPluginManager(strict=True)
    manager.load_entry_points(disabled=(), only=[plugin])
    return manager


def full_manager() -> LgvqPluginManager:
    """Every installed plugin (failures recorded, not raised), as a user has them, plus the test
    doubles the build check uses (``tiny-text`` for alignment losses)."""
    manager = LgvqPluginManager(strict=False)
    manager.load_entry_points(disabled=(), testing=True)
    return manager


def plugin_components(plugin: str) -> list[RegisteredComponent]:
    """Every component ``plugin`` registers, in kind order (raises if it cannot be loaded)."""
    registry = Registry(load_plugin(plugin))
    return [entry for kind in HOOK_FOR_KIND for entry in registry.entries(kind)]


def hook_problems(plugin: Any) -> list[str]:
    """What is wrong with the hook implementations of a plugin object (a module, a class, an instance)."""
    known = hook_names()
    impl_marker = f"{hookspecs.PROJECT}_impl"
    problems: list[str] = []
    for name in sorted(dir(plugin)):
        if not name.startswith(f"{hookspecs.PROJECT}_"):
            continue
        value = getattr(plugin, name, None)
        if not callable(value):
            continue
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; hooks are: {', '.join(sorted(known))}"
            problems.append(f"{name} is not an lgvq hook{hint}")
            continue
        if not hasattr(value, impl_marker):
            problems.append(f"{name} is not marked with @hookimpl (from lgvq_core import hookimpl): pluggy ignores it")
            continue
        signature = inspect.signature(value)
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                problems.append(f"{name}: keyword-only argument {parameter.name!r}; pluggy never passes it")
            elif parameter.default is not inspect.Parameter.empty:
                problems.append(f"{name}: argument {parameter.name!r} has a default value; hooks take none")
    manager = LgvqPluginManager(strict=True)
    try:
        manager.register(plugin, name="contract-check")
        manager.check_pending()
    except (pluggy.PluginValidationError, ValueError) as exc:
        problems.append(str(exc))
    return problems


_TORCH_FREE_SCRIPT = r"""
import importlib, sys, traceback

class TorchBlocker:
    # Records where torch is first imported from and stops the import there (loading torch
    # would only make the check slow).
    stack = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            if self.stack is None:
                frames = [f for f in traceback.format_stack()[:-1] if "<frozen" not in f]
                self.stack = "".join(frames)
            raise ImportError("torch import blocked by the lgvq plugin contract")
        return None

blocker = TorchBlocker()
sys.meta_path.insert(0, blocker)
try:
    module = importlib.import_module(sys.argv[1])
    for hook in sys.argv[2:]:
        function = getattr(module, hook, None)
        if function is not None:
            for spec in list(function() or ()):
                importlib.import_module(spec.config_cls.__module__)
except Exception:
    if blocker.stack is None:
        raise
if blocker.stack is not None:
    print(blocker.stack)
    sys.exit(3)
"""


def torch_import_problem(module: str, timeout: float = 120.0) -> str | None:
    """Import ``module`` and call its registration hooks in a fresh interpreter.

    Returns ``None`` when nothing tried to import torch, else a message with the import chain.
    The child sees the current ``sys.path`` (plugins put there by a test included).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    hooks = sorted(HOOK_FOR_KIND.values())
    result = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE_SCRIPT, module, *hooks],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if result.returncode == 0:
        return None
    if result.returncode == 3:
        return (
            f"importing {module} and calling its registration hooks imports torch, which makes `lgvq plugins`, "
            "`lgvq list` and `lgvq check` slow. Import torch only in factory modules (the spec's factory is a "
            f"'module:attr' string). torch was first imported here:\n{result.stdout}"
        )
    return f"importing {module} in a fresh interpreter failed:\n{result.stderr[-4000:]}"


# ------------------------------------------------------------------------------------------
# one component
# ------------------------------------------------------------------------------------------
def spec_problems(entry: RegisteredComponent) -> list[str]:
    """What is missing from a component's spec record."""
    spec = entry.spec
    problems = []
    if not isinstance(spec, ComponentSpec):
        problems.append(f"{spec!r} is not a ComponentSpec")
        return problems
    if not spec.summary or not spec.summary.strip():
        problems.append("summary is empty; `lgvq list` shows it")
    elif "\n" in spec.summary:
        problems.append("summary spans several lines; keep it to one (`lgvq list` prints one line per component)")
    if not attrs.has(spec.config_cls):
        problems.append(f"config_cls {spec.config_cls!r} is not an attrs class")
    if ":" not in spec.factory:
        problems.append(f"factory {spec.factory!r} is not a 'module:attr' string")
    if entry.kind == "backbone" and not isinstance(spec, BackboneSpec):
        problems.append("a backbone's spec must be a BackboneSpec (it may leave default_quantizer as None)")
    return problems


def undocumented_fields(config_cls: type) -> list[str]:
    """Fields of a config class without a ``doc`` (``lgvq schema`` would show nothing for them)."""
    return [field.name for field in config_fields(config_cls) if not field_doc(field).strip()]


def default_type_problems(config_cls: type) -> list[str]:
    """Defaults that are not values of their declared type (they pass ``lgvq check``, then fail in the model)."""
    return [problem.message for problem in default_problems(config_cls)]


def schema_problem(entry: RegisteredComponent) -> str | None:
    """``lgvq schema KIND NAME`` must render every field, and every default must be writable as TOML."""
    try:
        text = format_schema(entry.kind, entry.spec.name, entry.spec.summary, entry.spec.config_cls)
    except Exception as exc:  # noqa: BLE001 - any error is the finding
        return f"`lgvq schema {entry.kind.replace('_', '-')} {entry.spec.name}` fails: {type(exc).__name__}: {exc}"
    unwritable = [line.strip() for line in text.splitlines() if line.endswith("(not a TOML value)")]
    if unwritable:
        return (
            "defaults a run file cannot hold (use int, float, str, bool, a list of them, or a Literal): "
            + "; ".join(unwritable)
        )
    return None


def contract_config(config_cls: type) -> Any:
    """The instance the contract builds: ``config_cls.contract_config()`` or the defaults."""
    make = getattr(config_cls, "contract_config", None)
    if make is not None:
        config = make()
        if not isinstance(config, config_cls):
            raise ContractError(f"{config_cls.__qualname__}.contract_config() returned {config!r}, not an instance")
        return config
    required = [f.name for f in config_fields(config_cls) if f.default is attrs.NOTHING]
    if required:
        raise ContractError(
            f"{config_cls.__qualname__} has required keys ({', '.join(required)}); give it a contract_config() "
            "classmethod that returns a small valid instance"
        )
    return config_cls()


def component_table(entry: RegisteredComponent, config: Any) -> dict[str, Any]:
    """``config`` as the run-file table that names ``entry`` (``type`` first)."""
    return {"type": entry.spec.name, **unstructure(config)}


def round_trip_problem(entry: RegisteredComponent, registry: Registry) -> str | None:
    """A config written as TOML and read back must equal the original."""
    config = contract_config(entry.spec.config_cls)
    text = dumps_toml({"component": component_table(entry, config)})
    table = tomli.loads(text)["component"]
    try:
        back = structure_component(entry.kind, table, "$", registry=registry).config
    except ConfigError as exc:
        return f"the config written as TOML does not load back:\n{text}\n" + "\n".join(exc.problems)
    if back != config:
        return f"the config changed on its way through TOML:\nbefore: {config!r}\nafter:  {back!r}\nTOML:\n{text}"
    return None


def unknown_key_problem(entry: RegisteredComponent, registry: Registry) -> str | None:
    """A table with a key the config class does not have must be rejected, naming the key."""
    table = component_table(entry, contract_config(entry.spec.config_cls))
    table[UNKNOWN_KEY] = 1
    try:
        structure_component(entry.kind, table, "$", registry=registry)
    except ConfigError as exc:
        if any(p.startswith(f"$.{UNKNOWN_KEY}: unknown key") for p in exc.problems):
            return None
        return f"the unknown key {UNKNOWN_KEY!r} was rejected without naming it: {exc.problems}"
    return f"a table with the unknown key {UNKNOWN_KEY!r} was accepted; config classes must reject unknown keys"


def default_quantizer_problem(entry: RegisteredComponent, registry: Registry) -> str | None:
    """A backbone's ``default_quantizer`` must be a valid table of an installed quantizer."""
    table = getattr(entry.spec, "default_quantizer", None)
    if table is None:
        return None
    try:
        structure_component("quantizer", dict(table), f"{entry.spec.name}.default_quantizer", registry=registry)
    except ConfigError as exc:
        return "default_quantizer is not a valid quantizer table:\n" + "\n".join(exc.problems)
    return None


def default_context(entry: RegisteredComponent, registry: Registry, cache_dir: str) -> BuildContext:
    """The build context the contract gives a component of ``entry.kind``.

    Every kind gets CPU, seed 0, 32-pixel images, the train split, a temporary cache folder and
    :data:`CAPTIONS` as training captions. A component whose config class says ``uses_text = True``
    (it reads the text encoder when built) gets the ``tiny-text`` encoder. A backbone also gets a
    quantizer: its ``default_quantizer``, else a ``vq`` with 32 codes of width 16. An alignment loss
    also gets the ``tiny-text`` encoder, ``code_dim`` 16 and a 4×4 latent grid.
    """
    context = BuildContext(
        device="cpu",
        seed=0,
        image_size=IMAGE_SIZE,
        split="train",
        train_captions=lambda: list(CAPTIONS),
        cache_dir=cache_dir,
        log=lambda message: None,
    )
    if getattr(entry.spec.config_cls, "uses_text", False) is True:  # e.g. VQCT's word prior
        context.text_encoder = registry.build("text_encoder", {"type": "tiny-text"}, "$.text_encoder", context)
    if entry.kind == "backbone":
        table = getattr(entry.spec, "default_quantizer", None) or {"type": "vq", "codebook_size": 32, "dim": 16}
        context.quantizer = registry.build("quantizer", dict(table), "$.model.quantizer", context)
    elif entry.kind == "alignment_loss":
        context.text_encoder = registry.build("text_encoder", {"type": "tiny-text"}, "$.text_encoder", context)
        context.code_dim = 16
        context.latent_size = (4, 4)
    elif entry.kind == "downstream":
        import torch

        context.text_encoder = registry.build("text_encoder", {"type": "tiny-text"}, "$.text_encoder", context)
        generator = torch.Generator().manual_seed(0)
        context.frozen_tokenizer = FrozenTokenizer(
            codebook_size=32, grid=(4, 4), code_dim=16, codebook=torch.randn(32, 16, generator=generator)
        )
    return context


def build_component(entry: RegisteredComponent, registry: Registry, cache_dir: str) -> tuple[Any, Any, BuildContext]:
    """Build ``entry`` as the contract does: returns (component, config, context)."""
    config_cls = entry.spec.config_cls
    config = contract_config(config_cls)
    context = default_context(entry, registry, cache_dir)
    if entry.kind == "downstream":
        context.train_data = code_dataset(config, registry, context)
        context.train_captions = context.train_data.all_captions
    adjust = getattr(config_cls, "contract_context", None)
    if adjust is not None:
        context = adjust(context)
    factory = entry.spec.load_factory()
    return factory(config, context), config, context


def exercise(entry: RegisteredComponent, component: Any, context: BuildContext) -> None:
    """Check a built component against its kind's contract (each kind's check lives beside that
    contract); raise :class:`~lgvq_core.contracts.ContractError` if it misbehaves."""
    import torch  # lazy: imports torch; the contract's import and registration checks run without it

    torch.manual_seed(0)
    checks = _checks()
    if entry.kind not in checks:
        raise ContractError(f"no contract check for components of kind {entry.kind!r}")
    checks[entry.kind](entry, component, context)


def _check_callback(entry: RegisteredComponent, component: Any, context: BuildContext) -> None:
    problems = hook_problems(component)
    if problems:
        raise ContractError("the callback's hooks are wrong:\n" + "\n".join(problems))


def _checks() -> dict[str, Any]:
    """Kind -> ``check(entry, component, context)``: each kind's own check, with what the suite built."""
    from lgvq_core.alignment.base import check_alignment_loss  # lazy: imports torch; see exercise
    from lgvq_core.data.base import check_dataset  # lazy: imports torch; see exercise
    from lgvq_core.interop.exporting import check_exporter  # lazy: imports torch; see exercise
    from lgvq_core.interop.records import check_importer  # lazy: only the build check needs it; see exercise
    from lgvq_core.loggers import check_logger  # lazy: only the build check needs it; see exercise
    from lgvq_core.quantizers.base import check_quantizer  # lazy: imports torch; see exercise
    from lgvq_core.text_encoder import check_text_encoder  # lazy: imports torch; see exercise
    from lgvq_core.tokenizer import check_tokenizer  # lazy: imports torch; see exercise

    return {
        "quantizer": lambda entry, component, context: check_quantizer(component),
        "backbone": lambda entry, component, context: check_tokenizer(component, context.image_size or IMAGE_SIZE),
        "text_encoder": lambda entry, component, context: check_text_encoder(component, list(CAPTIONS)),
        "alignment_loss": lambda entry, component, context: check_alignment_loss(
            component, context.text_encoder, context.code_dim or 16, context.latent_size or (4, 4), list(CAPTIONS)
        ),
        "dataset": lambda entry, component, context: check_dataset(
            component, frozenset(getattr(entry.spec.config_cls, "annotation_kinds", frozenset()))
        ),
        "task": lambda entry, component, context: check_task(component),
        "downstream": lambda entry, component, context: check_downstream_model(
            component, context.train_data, context.text_encoder
        ),
        "callback": _check_callback,
        "logger": lambda entry, component, context: check_logger(component),
        "importer": lambda entry, component, context: check_importer(component),
        "exporter": lambda entry, component, context: check_exporter(component),
    }


def code_dataset(config: Any, registry: Registry, context: BuildContext) -> Any:
    """Random codes of 8 ``shapes`` images, itemised as the model's config asks (``unit``,
    ``annotations``): a downstream model meets the batches a real run gives it."""
    import torch

    from lgvq_core.data.codes import (
        CodeDataset,
    )  # lazy: imports torch; the contract's import and registration checks run without it

    images = registry.build(
        "dataset", {"type": "shapes", "image_size": IMAGE_SIZE, "num_train": 8, "num_val": 2}, "$.data", context
    )
    frozen = context.frozen_tokenizer
    generator = torch.Generator().manual_seed(0)
    codes = {
        "indices": torch.randint(frozen.codebook_size, (len(images), *frozen.grid), generator=generator),
        "valid": torch.ones(len(images), dtype=torch.bool),
    }
    unit = getattr(config, "unit", None)
    annotations = getattr(config, "annotations", None)
    wanted = sorted(annotations()) if callable(annotations) else []
    return CodeDataset(codes, images, [a for a in wanted if a == "segmentation"], unit() if callable(unit) else "image")


def _collect_components(plugin: str) -> list[tuple[str, str]]:
    try:
        return [(entry.kind, entry.name) for entry in plugin_components(plugin)]
    except Exception:  # noqa: BLE001 - test_loads_through_entry_point reports it
        return []


class PluginContract:
    """Subclass in a test module and set :attr:`plugin` to the plugin's entry-point name."""

    #: The entry-point name of the plugin under test.
    plugin: str = ""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "component" not in metafunc.fixturenames and "backbone" not in metafunc.fixturenames:
            return
        found = _collect_components(self.plugin)
        if "backbone" in metafunc.fixturenames:
            found = [item for item in found if item[0] == "backbone"]
            params = [pytest.param(item, id=item[1]) for item in found]
            name, what = "backbone", "no backbone"
        else:
            params = [pytest.param(item, id=f"{item[0]}:{item[1]}") for item in found]
            name, what = "component", "no component (or could not be loaded)"
        if not params:
            params = [pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"{self.plugin!r} registers {what}"))]
        metafunc.parametrize(name, params)

    # -- fixtures ---------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def own_registry(cls) -> Registry:
        """The plugin alone."""
        return Registry(load_plugin(cls.plugin))

    @pytest.fixture(scope="class")
    @classmethod
    def full_registry(cls) -> Registry:
        """Every installed plugin (failures recorded, not raised), as a user would have them."""
        return Registry(full_manager())

    @pytest.fixture
    def entry(self, own_registry: Registry, component: tuple[str, str]) -> RegisteredComponent:
        kind, name = component
        return own_registry.get(kind, name)

    # -- the plugin ------------------------------------------------------------------------
    def test_plugin_is_named(self) -> None:
        assert self.plugin, f'set `plugin = "<entry-point name>"` on {type(self).__name__}'

    def test_loads_through_entry_point(self) -> None:
        manager = load_plugin(self.plugin)
        assert self.plugin in manager.infos
        Registry(manager)  # strict: a registration hook that raises or returns a non-spec fails here

    def test_imports_without_torch(self) -> None:
        problem = torch_import_problem(plugin_module(self.plugin))
        assert problem is None, problem

    def test_hooks_are_known_and_well_formed(self) -> None:
        module = importlib.import_module(plugin_module(self.plugin))
        problems = hook_problems(module)
        assert not problems, "\n".join(problems)

    # -- each component ----------------------------------------------------------------------
    def test_spec_is_complete(self, entry: RegisteredComponent) -> None:
        problems = spec_problems(entry)
        assert not problems, "\n".join(problems)

    def test_name_is_not_claimed_by_another_plugin(self, entry: RegisteredComponent, full_registry: Registry) -> None:
        clash = full_registry.conflicts[entry.kind].get(normalize_name(entry.name))
        if clash:
            owners = ", ".join(f"{e.distribution} (plugin {e.plugin!r})" for e in clash)
            pytest.fail(f"{entry.kind} {entry.name!r} is registered by several plugins: {owners}")

    def test_config_fields_are_documented(self, entry: RegisteredComponent) -> None:
        missing = undocumented_fields(entry.spec.config_cls)
        assert not missing, (
            f"{entry.spec.config_cls.__qualname__} fields without a doc: {', '.join(missing)}; "
            'declare them as option(default, "what it does")'
        )

    def test_config_defaults_have_their_declared_types(self, entry: RegisteredComponent) -> None:
        problems = default_type_problems(entry.spec.config_cls)
        assert not problems, "\n".join(problems)

    def test_schema_renders_every_field(self, entry: RegisteredComponent) -> None:
        problem = schema_problem(entry)
        assert problem is None, problem

    def test_config_round_trips_through_toml(self, entry: RegisteredComponent, own_registry: Registry) -> None:
        problem = round_trip_problem(entry, own_registry)
        assert problem is None, problem

    def test_config_rejects_unknown_key(self, entry: RegisteredComponent, own_registry: Registry) -> None:
        problem = unknown_key_problem(entry, own_registry)
        assert problem is None, problem

    def test_default_quantizer_is_a_valid_table(self, backbone: tuple[str, str], full_registry: Registry) -> None:
        entry = full_registry.get(*backbone)
        problem = default_quantizer_problem(entry, full_registry)
        assert problem is None, problem

    def test_factory_imports(self, entry: RegisteredComponent) -> None:
        factory = entry.spec.load_factory()
        assert callable(factory), f"{entry.spec.factory} is not callable"

    def test_builds_on_cpu_and_runs(
        self, entry: RegisteredComponent, full_registry: Registry, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        reason = getattr(entry.spec.config_cls, "contract_skip_build", None)
        if reason:
            pytest.skip(f"{entry.kind} {entry.name!r} is not built by the contract: {reason}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
        component, _, context = build_component(entry, full_registry, str(tmp_path))
        exercise(entry, component, context)


# ------------------------------------------------------------------------------------------
# python -m lgvq_core.testing.contract PLUGIN...
# ------------------------------------------------------------------------------------------
def _suite_source(plugins: Iterable[str]) -> str:
    lines = ["from lgvq_core.testing.contract import PluginContract", ""]
    for i, name in enumerate(plugins):
        class_name = "Test_" + "".join(c if c.isalnum() else "_" for c in name) + f"_{i}"
        lines += ["", f"class {class_name}(PluginContract):", f"    plugin = {name!r}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the contract on the named plugins (all installed ones with ``--all``); extra args go to pytest."""
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1 :]
    if args == ["--all"]:
        args = plugin_names()
    if not args or any(a.startswith("-") for a in args):
        print("usage: python -m lgvq_core.testing.contract PLUGIN [PLUGIN ...] | --all [-- PYTEST ARGS]")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="lgvq-contract-") as folder:
        suite = os.path.join(folder, "test_lgvq_contract.py")
        with open(suite, "w", encoding="utf-8") as handle:
            handle.write(_suite_source(args))
        ini = os.path.join(folder, "pytest.ini")
        with open(ini, "w", encoding="utf-8") as handle:
            handle.write("[pytest]\n")
        return int(pytest.main([suite, "-c", ini, "--rootdir", folder, "-p", "no:cacheprovider", "-rfEs", *extra]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
