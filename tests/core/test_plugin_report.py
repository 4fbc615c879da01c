"""What `lgvq plugins` and `lgvq list` say about odd plugins, and the opt-in test doubles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

from lgvq_core import hookimpl
from lgvq_core.plugins import TESTING_ENV, LgvqPluginManager, plugin_names


def lgvq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def without(name: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != name}


# ------------------------------------------------------------------------------------------
# the testing plugin is opt-in
# ------------------------------------------------------------------------------------------
def test_lgvq_list_shows_no_test_double_unless_opted_in():
    plain = lgvq("list", "backbone", env=without(TESTING_ENV))
    opted_in = lgvq("list", "backbone", env={**os.environ, TESTING_ENV: "1"})

    assert plain.returncode == 0, plain.stderr
    assert "vqgan" in plain.stdout and "tiny-ae" not in plain.stdout
    assert opted_in.returncode == 0, opted_in.stderr
    assert "tiny-ae" in opted_in.stdout


def test_lgvq_plugins_has_no_testing_plugin_unless_opted_in():
    plain = json.loads(lgvq("plugins", "--json", env=without(TESTING_ENV)).stdout)
    opted_in = json.loads(lgvq("plugins", "--json", env={**os.environ, TESTING_ENV: "1"}).stdout)

    assert "testing" not in {p["name"] for p in plain["plugins"]}
    [testing] = [p for p in opted_in["plugins"] if p["name"] == "testing"]
    assert testing["module"] == "lgvq_core.testing._plugin"
    assert testing["distribution"] == "lgvq-core"
    assert testing["components"] == {
        "backbone": ["tiny-ae"],
        "text-encoder": ["tiny-text"],
        "downstream": ["tiny-prior"],
    }


def test_naming_the_testing_plugin_opts_in(monkeypatch):
    monkeypatch.delenv(TESTING_ENV, raising=False)
    named = LgvqPluginManager(strict=True)
    named.load_entry_points(disabled=(), only=["core", "testing"])
    everything = LgvqPluginManager(strict=True)
    everything.load_entry_points(disabled=())

    assert set(named.infos) == {"core", "testing"}
    assert "testing" not in everything.infos and "core" in everything.infos
    assert "testing" not in plugin_names() and "testing" in plugin_names(testing=True)


# ------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------
def test_a_plugin_without_hookimpl_is_labelled_as_such(make_plugin_manager, lgvq_cli):
    unmarked = types.ModuleType("unmarked_plugin")
    unmarked.lgvq_backbones = lambda: []  # not marked with @hookimpl: pluggy ignores it
    make_plugin_manager(["core"], plugins={"unmarked": unmarked})

    lines = lgvq_cli("plugins").out.splitlines()

    at = lines.index("unmarked  ((registered by the test) 0, unmarked_plugin)")
    assert lines[at + 1] == "    (no hook implementations: mark the module's lgvq_* functions with @hookimpl)"


def test_a_plugin_with_loop_hooks_only_lists_them(make_plugin_manager, lgvq_cli):
    class Logger:
        @hookimpl
        def lgvq_train_start(self, run):
            pass

    make_plugin_manager(["core"], plugins={"logger": Logger()})

    lines = lgvq_cli("plugins").out.splitlines()

    assert lines[lines.index("logger  ((registered by the test) 0, Logger)") + 1] == "    hooks: lgvq_train_start"


def test_a_plugin_whose_hook_raised_is_listed_once_with_the_hook_and_the_line(make_plugin_manager, lgvq_cli):
    class Faulty:
        @hookimpl
        def lgvq_backbones(self):
            raise RuntimeError("the config module could not be read")

    make_plugin_manager(["core"], plugins={"faulty": Faulty()}, strict=False)
    line = Faulty.lgvq_backbones.__code__.co_firstlineno + 2

    out = lgvq_cli("plugins").out.splitlines()
    report = json.loads(lgvq_cli("plugins", "--json").out)

    at = out.index("faulty  ((registered by the test) 0, Faulty)")
    assert out[at + 1] == (
        f"    FAILED lgvq_backbones: RuntimeError: the config module could not be read  (at {__file__}:{line})"
    )
    assert not [text for text in out if text.startswith("FAILED")]  # not listed a second time
    assert report["failed"][0]["hook"] == "lgvq_backbones"
    assert report["failed"][0]["location"] == f"{__file__}:{line}"


def test_a_plugin_whose_every_name_conflicts_shows_the_conflict_and_lgvq_list_too(
    fixture_plugin, make_plugin_manager, lgvq_cli
):
    fixture_plugin("sample")
    fixture_plugin("clash")
    make_plugin_manager(["sample", "clash"], strict=False)

    plugins = lgvq_cli("plugins").out.splitlines()
    listing = lgvq_cli("list", "backbone").out.splitlines()

    at = next(i for i, text in enumerate(plugins) if text.startswith("clash  (lgvq-test-clash 2.0.0"))
    assert plugins[at + 1] == "    backbone (CONFLICT, not available): sample-ae"
    [row] = [text for text in listing if text.startswith("sample-ae")]
    assert "CONFLICT: provided by clash: lgvq-test-clash 2.0.0 and sample: lgvq-test-sample 0.3.0" in row


def test_a_misspelled_disabled_plugin_is_warned_about(monkeypatch):
    monkeypatch.setenv("LGVQ_DISABLE_PLUGINS", "tasks,backbone")
    manager = LgvqPluginManager(strict=True)

    manager.load_entry_points()

    assert manager.disabled == {"tasks"}
    assert manager.warnings == [
        "LGVQ_DISABLE_PLUGINS names 'backbone', which is not an installed plugin; did you mean 'backbones'?"
    ]
    result = lgvq("list", "quantizer", env={**os.environ, "LGVQ_DISABLE_PLUGINS": "backbone"})
    assert "warning: LGVQ_DISABLE_PLUGINS names 'backbone'" in result.stderr
