"""The contract suite catches what it promises to catch, and passes a well-behaved plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import attrs
import pytest

from lgvq_core import ComponentSpec, hookimpl, option
from lgvq_core.context import BuildContext
from lgvq_core.registry import get_registry
from lgvq_core.specs import RegisteredComponent
from lgvq_core.testing.contract import (
    ContractError,
    build_component,
    contract_config,
    default_quantizer_problem,
    exercise,
    hook_problems,
    round_trip_problem,
    spec_problems,
    torch_import_problem,
    undocumented_fields,
    unknown_key_problem,
)


def plugin_module(**functions) -> types.ModuleType:
    module = types.ModuleType("fake_plugin")
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def registered(kind: str, spec: ComponentSpec) -> RegisteredComponent:
    return RegisteredComponent(kind=kind, spec=spec, plugin="fake", distribution="fake-dist", version="0")


@attrs.define
class GoodConfig:
    """A config that keeps every rule."""

    size: int = option(3, "How many.")


# ------------------------------------------------------------------------------------------
# hooks
# ------------------------------------------------------------------------------------------
def test_a_well_formed_plugin_module_has_no_hook_problems():
    @hookimpl
    def lgvq_backbones():
        return []

    @hookimpl
    def lgvq_train_end(run):
        pass

    assert hook_problems(plugin_module(lgvq_backbones=lgvq_backbones, lgvq_train_end=lgvq_train_end)) == []


def test_a_misspelled_hook_fails_with_the_right_name_suggested():
    @hookimpl
    def lgvq_backbone():
        return []

    problems = hook_problems(plugin_module(lgvq_backbone=lgvq_backbone))

    assert problems[0] == "lgvq_backbone is not an lgvq hook; did you mean 'lgvq_backbones'?"
    assert "unknown hook 'lgvq_backbone'" in problems[-1]


def test_a_hook_without_the_hookimpl_marker_fails():
    def lgvq_quantizers():
        return []

    assert hook_problems(plugin_module(lgvq_quantizers=lgvq_quantizers)) == [
        "lgvq_quantizers is not marked with @hookimpl (from lgvq_core import hookimpl): pluggy ignores it"
    ]


def test_keyword_only_and_default_arguments_fail():
    @hookimpl
    def lgvq_train_batch_end(run, metrics=None):
        pass

    @hookimpl
    def lgvq_validation_end(run, *, metrics):
        pass

    problems = hook_problems(
        plugin_module(lgvq_train_batch_end=lgvq_train_batch_end, lgvq_validation_end=lgvq_validation_end)
    )

    assert "lgvq_train_batch_end: argument 'metrics' has a default value; hooks take none" in problems
    assert "lgvq_validation_end: keyword-only argument 'metrics'; pluggy never passes it" in problems


def test_an_argument_the_hookspec_lacks_fails():
    @hookimpl
    def lgvq_train_start(run, trainer):
        pass

    [problem] = hook_problems(plugin_module(lgvq_train_start=lgvq_train_start))

    assert "Argument(s) {'trainer'} are declared in the hookimpl but can not be found in the hookspec" in problem


def test_a_callback_object_is_checked_like_a_module():
    class Callback:
        @hookimpl
        def lgvq_train_batch_end(self, run, metrics):
            pass

        @hookimpl
        def lgvq_validation_ends(self, run, metrics):
            pass

    [unknown, pluggy_says] = hook_problems(Callback())

    assert unknown == "lgvq_validation_ends is not an lgvq hook; did you mean 'lgvq_validation_end'?"
    assert "unknown hook 'lgvq_validation_ends'" in pluggy_says


# ------------------------------------------------------------------------------------------
# torch stays out of plugin and config modules
# ------------------------------------------------------------------------------------------
def write_package(root: Path, name: str, plugin_source: str, config_source: str) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_plugin.py").write_text(textwrap.dedent(plugin_source))
    (package / "config.py").write_text(textwrap.dedent(config_source))


PLUGIN = """
    from lgvq_core import ComponentSpec, hookimpl
    from {name}.config import Config

    @hookimpl
    def lgvq_quantizers():
        return [ComponentSpec(name="q", summary="q", config_cls=Config, factory="{name}.model:build")]
"""


def test_a_plugin_free_of_torch_passes_the_import_check(tmp_path, monkeypatch):
    config = "import attrs\n@attrs.define\nclass Config:\n    pass\n"
    write_package(tmp_path, "clean_plugin", PLUGIN.format(name="clean_plugin"), config)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert torch_import_problem("clean_plugin._plugin") is None


def test_a_config_module_importing_torch_fails_and_shows_where(tmp_path, monkeypatch):
    config = "import attrs\nimport torch\n@attrs.define\nclass Config:\n    pass\n"
    write_package(tmp_path, "heavy_plugin", PLUGIN.format(name="heavy_plugin"), config)
    monkeypatch.syspath_prepend(str(tmp_path))

    problem = torch_import_problem("heavy_plugin._plugin")

    assert problem is not None
    assert problem.startswith("importing heavy_plugin._plugin and calling its registration hooks imports torch")
    assert str(tmp_path / "heavy_plugin" / "config.py") in problem
    assert "import torch" in problem


def test_a_registration_hook_importing_torch_fails(tmp_path, monkeypatch):
    plugin = PLUGIN.replace("    def lgvq_quantizers():\n", "    def lgvq_quantizers():\n        import torch\n")
    config = "import attrs\n@attrs.define\nclass Config:\n    pass\n"
    write_package(tmp_path, "late_plugin", plugin.format(name="late_plugin"), config)
    monkeypatch.syspath_prepend(str(tmp_path))

    problem = torch_import_problem("late_plugin._plugin")

    assert problem is not None and "late_plugin/_plugin.py" in problem


def test_a_plugin_that_cannot_be_imported_says_so(tmp_path, monkeypatch):
    write_package(tmp_path, "typo_plugin", "from lgvq_core import hookimp\n", "")
    monkeypatch.syspath_prepend(str(tmp_path))

    problem = torch_import_problem("typo_plugin._plugin")

    assert problem.startswith("importing typo_plugin._plugin in a fresh interpreter failed:")
    assert "ImportError: cannot import name 'hookimp'" in problem


# ------------------------------------------------------------------------------------------
# specs and configs
# ------------------------------------------------------------------------------------------
def test_a_complete_spec_has_no_problems():
    spec = ComponentSpec(name="fine", summary="a fine quantizer", config_cls=GoodConfig, factory="m:f")

    assert spec_problems(registered("quantizer", spec)) == []


def test_an_empty_or_multiline_summary_fails():
    empty = ComponentSpec(name="a", summary=" ", config_cls=GoodConfig, factory="m:f")
    long = ComponentSpec(name="b", summary="first\nsecond", config_cls=GoodConfig, factory="m:f")

    assert spec_problems(registered("task", empty)) == ["summary is empty; `lgvq list` shows it"]
    assert spec_problems(registered("task", long)) == [
        "summary spans several lines; keep it to one (`lgvq list` prints one line per component)"
    ]


def test_a_backbone_must_use_a_backbone_spec():
    spec = ComponentSpec(name="bb", summary="a backbone", config_cls=GoodConfig, factory="m:f")

    assert spec_problems(registered("backbone", spec)) == [
        "a backbone's spec must be a BackboneSpec (it may leave default_quantizer as None)"
    ]


def test_fields_without_doc_are_found():
    @attrs.define
    class Sloppy:
        documented: int = option(1, "Has a doc.")
        bare: int = attrs.field(default=2)
        blank: int = option(3, "  ")

    assert undocumented_fields(Sloppy) == ["bare", "blank"]


def test_a_config_with_required_keys_needs_a_contract_config():
    @attrs.define
    class NeedsRoot:
        root: str = option(doc="Where the data is.")

    with pytest.raises(ContractError, match=r"NeedsRoot has required keys \(root\); give it a contract_config\(\)"):
        contract_config(NeedsRoot)


def test_contract_config_is_used_when_given():
    @attrs.define
    class Small:
        width: int = option(256, "Width.")

        @classmethod
        def contract_config(cls):
            return cls(width=8)

    assert contract_config(Small) == Small(width=8)


def test_a_value_toml_cannot_hold_fails_the_round_trip(plugin_manager):
    @attrs.define
    class Nullable:
        scale: float | None = option(1.0, "A scale; None turns it off.")

        @classmethod
        def contract_config(cls):
            return cls(scale=None)

    entry = registered("callback", ComponentSpec(name="nullable", summary="n", config_cls=Nullable, factory="m:f"))
    registry = get_registry()
    registry._components["callback"]["nullable"] = entry

    problem = round_trip_problem(entry, registry)

    assert problem is not None and problem.startswith("the config changed on its way through TOML:")


def test_the_sample_plugins_configs_round_trip_and_reject_unknown_keys(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")
    make_plugin_manager(["core", "testing", "sample"])
    registry = get_registry()

    for kind in ("quantizer", "backbone", "dataset", "callback"):
        for entry in registry.entries(kind):
            if entry.plugin == "sample":
                assert round_trip_problem(entry, registry) is None
                assert unknown_key_problem(entry, registry) is None


def test_a_default_quantizer_table_that_does_not_validate_fails(fixture_plugin, make_plugin_manager):
    from lgvq_core import BackboneSpec

    fixture_plugin("sample")
    make_plugin_manager(["core", "testing", "sample"])
    registry = get_registry()
    spec = BackboneSpec(
        name="odd",
        summary="odd",
        config_cls=GoodConfig,
        factory="m:f",
        default_quantizer={"type": "sample-vq", "codebook": 64},
    )

    problem = default_quantizer_problem(registered("backbone", spec), registry)

    assert problem == (
        "default_quantizer is not a valid quantizer table:\n"
        "odd.default_quantizer.codebook: unknown key 'codebook'; did you mean 'codebook_size'?"
    )


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------
def test_a_backbone_is_built_with_its_default_quantizer_and_exercised(fixture_plugin, make_plugin_manager, tmp_path):
    fixture_plugin("sample")
    make_plugin_manager(["core", "testing", "sample"])
    registry = get_registry()
    entry = registry.get("backbone", "sample-ae")

    component, config, context = build_component(entry, registry, str(tmp_path))

    assert config.hidden == 4  # SampleAutoencoderConfig.contract_config()
    assert type(context.quantizer).__name__ == "SampleQuantizer" and context.quantizer.dim == 8
    exercise(entry, component, context)


def test_a_factory_returning_the_wrong_kind_of_object_fails(plugin_manager):
    entry = get_registry().get("backbone", "tiny-ae")

    with pytest.raises(ContractError, match=r"not a lgvq_core\.tokenizer\.Tokenizer"):
        exercise(entry, object(), BuildContext())


def test_a_quantizer_whose_output_has_the_wrong_shape_fails(plugin_manager):
    import torch

    from lgvq_core.quantizers.base import Quantizer, QuantizerOutput

    class Shrinking(Quantizer):
        codebook_size, dim = 4, 2

        def forward(self, z):
            return QuantizerOutput(quant=z[:, :1], indices=z[:, 0].long(), loss=torch.zeros(()))

    entry = get_registry().get("quantizer", "vq")

    with pytest.raises(ContractError, match=r"quant has shape \(2, 1, 4, 4\), z had \(2, 2, 4, 4\)"):
        exercise(entry, Shrinking(), BuildContext())


def test_a_text_encoder_whose_embed_ids_depends_on_the_position_fails(plugin_manager):
    import torch

    from lgvq_core.testing.config import TinyTextConfig
    from lgvq_core.testing.doubles import TinyText

    class Positional(TinyText):
        def embed_ids(self, ids):
            return super().embed_ids(ids) + torch.arange(ids.shape[1]).view(1, -1, 1)

    entry = get_registry().get("text_encoder", "tiny-text")
    exercise(entry, TinyText(TinyTextConfig()), BuildContext())  # the per-id double passes

    with pytest.raises(ContractError, match=r"embed_ids\(\) must give each id its embedding-layer row"):
        exercise(entry, Positional(TinyTextConfig()), BuildContext())


# ------------------------------------------------------------------------------------------
# the whole suite, as a plugin author runs it
# ------------------------------------------------------------------------------------------
def contract_run(*plugins: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lgvq_core.testing.contract", *plugins, "--", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_suite_passes_a_well_behaved_plugin_and_shows_what_it_skips(fixture_plugin):
    fixture_plugin("sample")

    result = contract_run("sample")

    assert result.returncode == 0, result.stdout[-3000:]
    assert "failed" not in result.stdout
    assert "dataset 'sample-folder' is not built by the contract: reads images from a folder the user supplies" in (
        result.stdout
    )


def test_the_suite_fails_a_plugin_that_cannot_be_imported(fixture_plugin):
    fixture_plugin("broken")

    result = contract_run("broken")

    assert result.returncode == 1
    assert "Test_broken_0::test_loads_through_entry_point" in result.stdout.split("short test summary info")[1]
    assert "lgvq_test_broken needs the package 'imaginary-dependency'" in result.stdout


@pytest.mark.slow
def test_the_suite_fails_a_plugin_whose_component_name_is_taken(fixture_plugin):
    fixture_plugin("sample")
    fixture_plugin("clash")

    result = contract_run("clash")

    assert result.returncode == 1
    assert "backbone 'Sample_AE' is registered by several plugins" in result.stdout
