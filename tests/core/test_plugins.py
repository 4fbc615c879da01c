"""Plugin discovery: entry points, failures, strict mode, blocking, name clashes."""

from __future__ import annotations

import importlib.metadata

import pluggy
import pytest

from lgvq_core import hookimpl
from lgvq_core.errors import DuplicateComponentError, PluginLoadError
from lgvq_core.plugins import LgvqPluginManager, disabled_from_env, strict_from_env
from lgvq_core.registry import Registry, get_plugin_manager, get_registry, set_plugin_manager


def test_builtin_plugins_load_through_entry_points_like_any_other(make_plugin_manager):
    manager = make_plugin_manager(["core", "testing"])

    version = importlib.metadata.version("lgvq-core")
    assert manager.infos["core"].distribution == "lgvq-core"
    assert manager.infos["core"].version == version
    assert manager.infos["core"].module == "lgvq_core._plugin"
    assert manager.infos["testing"].module == "lgvq_core.testing._plugin"
    assert set(manager.infos) == {"core", "testing"}
    assert manager.failures == []


def test_an_installed_plugin_is_found_through_its_entry_point(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")

    manager = make_plugin_manager(["core", "testing", "sample"])

    info = manager.infos["sample"]
    assert (info.distribution, info.version, info.module) == ("lgvq-test-sample", "0.3.0", "lgvq_test_sample._plugin")
    registry = get_registry()
    assert registry.get("backbone", "sample-ae").distribution == "lgvq-test-sample"
    assert registry.list_components("quantizer", "sample*") == ["sample-vq"]
    assert registry.list_components("dataset", "sample-*") == ["sample-folder", "sample-shapes"]


def test_a_plugin_that_raises_on_import_is_recorded_and_the_others_keep_working(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")
    fixture_plugin("broken")

    manager = make_plugin_manager(["core", "testing", "sample", "broken"], strict=False)

    assert "broken" not in manager.infos
    [failure] = manager.failures
    assert (failure.name, failure.distribution, failure.version) == ("broken", "lgvq-test-broken", "0.0.1")
    assert failure.error == (
        "ImportError: lgvq_test_broken needs the package 'imaginary-dependency'; pip install imaginary-dependency"
    )
    assert "lgvq_test_broken/_plugin.py" in failure.traceback
    assert get_registry().list_components("backbone") == ["sample-ae", "tiny-ae"]


def test_strict_mode_makes_a_plugin_failure_fatal_with_its_error(fixture_plugin):
    fixture_plugin("broken")
    manager = LgvqPluginManager(strict=True)

    with pytest.raises(PluginLoadError) as caught:
        manager.load_entry_points(disabled=(), only=["broken"])

    message = str(caught.value)
    assert "plugin 'broken' (lgvq-test-broken 0.0.1) failed: ImportError: lgvq_test_broken needs" in message
    assert "LGVQ_STRICT_PLUGINS=0" in message


@pytest.mark.parametrize(
    ("value", "strict"), [("1", True), ("true", True), ("Yes", True), ("0", False), ("", False), ("no", False)]
)
def test_strict_mode_is_read_from_the_environment(monkeypatch, value, strict):
    monkeypatch.setenv("LGVQ_STRICT_PLUGINS", value)

    assert strict_from_env() is strict
    assert LgvqPluginManager().strict is strict


def test_disabled_plugins_are_blocked_by_name_and_never_imported(fixture_plugin, monkeypatch):
    fixture_plugin("broken")
    fixture_plugin("sample")
    monkeypatch.setenv("LGVQ_DISABLE_PLUGINS", " broken, sample ,")
    manager = LgvqPluginManager(strict=True)

    manager.load_entry_points(only=["core", "broken", "sample"])

    assert disabled_from_env() == {"broken", "sample"}
    assert manager.disabled == {"broken", "sample"}
    assert set(manager.infos) == {"core"}
    assert manager.failures == []
    assert manager.is_blocked("sample")


def test_a_registration_hook_that_raises_is_reported_as_that_plugins_failure(make_plugin_manager):
    class Faulty:
        @hookimpl
        def lgvq_backbones(self):
            raise RuntimeError("the config module could not be read")

    manager = make_plugin_manager(["testing"], plugins={"faulty": Faulty()}, strict=False)
    registry = Registry(manager)

    [failure] = registry.failures
    assert failure.name == "faulty"
    assert failure.error == "RuntimeError: the config module could not be read"
    assert registry.list_components("backbone") == ["tiny-ae"]


def test_a_registration_hook_that_raises_is_fatal_in_strict_mode(make_plugin_manager):
    class Faulty:
        @hookimpl
        def lgvq_quantizers(self):
            raise RuntimeError("broken registration")

    manager = make_plugin_manager([], plugins={"faulty": Faulty()}, strict=True, install=False)

    with pytest.raises(PluginLoadError, match="plugin 'faulty'.*RuntimeError: broken registration"):
        Registry(manager)


def test_a_hook_returning_something_else_than_specs_is_a_failure(make_plugin_manager):
    class Sloppy:
        @hookimpl
        def lgvq_datasets(self):
            return [{"name": "folder"}]

    manager = make_plugin_manager([], plugins={"sloppy": Sloppy()}, strict=False, install=False)
    registry = Registry(manager)

    [failure] = registry.failures
    assert failure.error == "TypeError: lgvq_datasets returned {'name': 'folder'}, not a ComponentSpec"
    assert registry.list_components("dataset") == []


def test_a_hookimpl_with_an_argument_the_spec_lacks_is_rejected_by_pluggy():
    class WrongArgs:
        @hookimpl
        def lgvq_train_start(self, run, trainer):
            pass

    manager = LgvqPluginManager(strict=True)

    with pytest.raises(pluggy.PluginValidationError, match="trainer"):
        manager.register(WrongArgs(), name="wrong-args")


def test_the_same_component_name_from_two_distributions_is_an_error_naming_both(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")
    fixture_plugin("clash")
    manager = make_plugin_manager(["sample", "clash"], strict=False)
    registry = Registry(manager)

    with pytest.raises(DuplicateComponentError) as caught:
        registry.get("backbone", "sample-ae", "$.model.backbone.type")

    message = str(caught.value)
    assert message.startswith("$.model.backbone.type: backbone 'sample-ae' is provided by both ")
    assert "lgvq-test-clash 2.0.0 (plugin 'clash')" in message
    assert "lgvq-test-sample 0.3.0 (plugin 'sample')" in message
    assert "LGVQ_DISABLE_PLUGINS" in message
    assert registry.list_components("backbone") == []  # neither silently wins
    assert registry.conflict_messages() == [message.removeprefix("$.model.backbone.type: ")]


def test_the_same_component_name_twice_is_fatal_in_strict_mode(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")
    fixture_plugin("clash")
    manager = make_plugin_manager(["sample", "clash"], strict=True, install=False)

    with pytest.raises(
        DuplicateComponentError, match="lgvq-test-clash.*lgvq-test-sample|lgvq-test-sample.*lgvq-test-clash"
    ):
        Registry(manager)


def test_set_plugin_manager_replaces_the_process_wide_manager_and_its_registry(make_plugin_manager):
    first = make_plugin_manager(["testing"])
    registry = get_registry()
    assert get_plugin_manager() is first

    second = make_plugin_manager(["core", "testing"])

    assert get_plugin_manager() is second
    assert get_registry() is not registry
    assert "vq" in get_registry().list_components("quantizer")
    assert "vq" not in registry.list_components("quantizer")


def test_forgetting_the_manager_loads_every_installed_plugin_again(make_plugin_manager, monkeypatch):
    make_plugin_manager(["testing"])
    monkeypatch.delenv("LGVQ_DISABLE_PLUGINS", raising=False)

    set_plugin_manager(None)

    assert {"core", "testing"} <= set(get_plugin_manager().infos)


def test_a_plugin_that_calls_sys_exit_on_import_is_a_failure_like_any_other(
    fixture_plugin, make_plugin_manager, monkeypatch
):
    fixture_plugin("broken")
    monkeypatch.setenv("LGVQ_TEST_BROKEN_EXIT", "3")

    manager = make_plugin_manager(["core", "testing", "broken"], strict=False)

    [failure] = manager.failures
    assert failure.name == "broken"
    assert failure.error == "SystemExit: the plugin called sys.exit(3) while loading"
    assert get_registry().list_components("backbone") == ["tiny-ae"]  # the others keep working
