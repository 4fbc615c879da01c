"""The component registry: patterns, name normalisation, unknown names, building."""

from __future__ import annotations

import pytest

from lgvq_core.config.schema import Component
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError, UnknownComponentError
from lgvq_core.registry import build, get_registry, get_spec, list_components


@pytest.fixture
def sample(fixture_plugin, make_plugin_manager):
    """core + testing + the sample plugin, as the process-wide manager."""
    fixture_plugin("sample")
    return make_plugin_manager(["core", "testing", "sample"])


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("*", ["sample-ae", "tiny-ae"]),
        ("sample*", ["sample-ae"]),
        ("*-ae", ["sample-ae", "tiny-ae"]),
        ("SAMPLE_*", ["sample-ae"]),
        ("?iny-ae", ["tiny-ae"]),
        ("vq*", []),
    ],
)
def test_list_components_matches_shell_patterns_on_normalised_names(sample, pattern, names):
    assert list_components("backbone", pattern) == names


@pytest.mark.parametrize("kind", ["backbone", "backbones", "Backbone", " BACKBONES "])
def test_kinds_are_accepted_in_singular_plural_and_any_case(sample, kind):
    assert list_components(kind) == ["sample-ae", "tiny-ae"]


@pytest.mark.parametrize("kind", ["text-encoder", "text_encoders", "Text-Encoders"])
def test_text_encoder_kind_accepts_dashes_and_underscores(sample, kind):
    assert "tiny-text" in list_components(kind)


def test_alignment_is_short_for_alignment_loss(sample):
    assert (
        list_components("alignment") == list_components("alignment-loss") == ["masked-text", "relation", "semantic-nce"]
    )


def test_an_unknown_kind_lists_the_kinds(sample):
    with pytest.raises(ValueError) as caught:
        list_components("backbon")

    assert str(caught.value) == (
        "unknown component kind 'backbon'; kinds are: backbone, quantizer, text-encoder, alignment-loss, "
        "dataset, task, callback, downstream, logger, importer, exporter"
    )


@pytest.mark.parametrize("name", ["sample-ae", "Sample-AE", "sample_ae", "SAMPLE_AE", " sample-ae "])
def test_names_are_case_insensitive_with_dash_and_underscore_equal(sample, name):
    assert get_spec("backbone", name).name == "sample-ae"


def test_an_unknown_name_says_where_suggests_close_names_and_lists_all(sample):
    with pytest.raises(UnknownComponentError) as caught:
        get_spec("quantizer", "sampel-vq", "$.model.quantizer.type")

    message = str(caught.value)
    assert message.startswith("$.model.quantizer.type: unknown quantizer 'sampel-vq'; did you mean 'sample-vq'?")
    assert message.endswith("Available: cosine, sample-vq, vq, vq-ema.")


def test_an_unknown_name_without_close_match_still_lists_what_is_available(sample):
    with pytest.raises(UnknownComponentError) as caught:
        get_spec("backbone", "transformer", "$.model.backbone.type")

    message = str(caught.value)
    assert "did you mean" not in message
    assert message.endswith("Available: sample-ae, tiny-ae.")


def test_an_unknown_name_of_an_empty_kind_says_none_is_installed(make_plugin_manager):
    make_plugin_manager(["testing"])

    with pytest.raises(UnknownComponentError, match=r"^\$: unknown task 'fid'\. No task is installed\.$"):
        get_spec("task", "fid")


def test_an_unknown_name_mentions_plugins_that_failed_to_load(fixture_plugin, make_plugin_manager):
    fixture_plugin("broken")
    make_plugin_manager(["testing", "broken"], strict=False)

    with pytest.raises(UnknownComponentError) as caught:
        get_spec("backbone", "broken-ae")

    assert "Note: plugin 'broken' (lgvq-test-broken 0.0.1) failed: ImportError" in str(caught.value)
    assert "(it may provide this component)" in str(caught.value)


def test_a_misspelled_backbone_gets_the_real_backbone_suggested(make_plugin_manager):
    make_plugin_manager(["core", "testing", "backbones"])

    with pytest.raises(UnknownComponentError) as caught:
        get_spec("backbone", "vqgna", "$.model.backbone.type")

    message = str(caught.value)
    assert message.startswith("$.model.backbone.type: unknown backbone 'vqgna'; did you mean 'vqgan'")
    for name in ("vqgan", "vqvae", "vqct", "tiny-ae"):
        assert name in message.split("Available: ")[1]


def test_get_records_who_provided_a_component(sample):
    entry = get_registry().get("backbone", "tiny-ae")

    assert (entry.kind, entry.plugin, entry.distribution) == ("backbone", "testing", "lgvq-core")


def test_build_validates_the_table_and_calls_the_factory_with_the_context(sample):
    quantizer = build("quantizer", {"type": "Sample_VQ", "dim": 4, "codebook_size": 5}, "$.model.quantizer")

    assert type(quantizer).__name__ == "SampleQuantizer"
    assert tuple(quantizer.codebook.shape) == (5, 4)

    backbone = build(
        "backbone", {"type": "sample-ae", "hidden": 4}, "$.model.backbone", BuildContext(quantizer=quantizer)
    )

    assert backbone.quantizer is quantizer
    assert backbone.code_dim == 4


def test_build_accepts_an_already_validated_component(sample):
    component = Component(type="sample-vq", config=get_spec("quantizer", "sample-vq").config_cls(dim=3))

    assert build("quantizer", component).dim == 3


def test_build_reports_every_problem_of_the_table_with_its_path(sample):
    with pytest.raises(ConfigError) as caught:
        build("quantizer", {"type": "sample-vq", "dim": 0, "beta": "high", "size": 3}, "$.model.quantizer")

    assert caught.value.problems == [
        "$.model.quantizer.size: unknown key 'size'; allowed keys: codebook_size, dim, beta, beta_placement",
        "$.model.quantizer.beta: expected a number, got string 'high'",
        "$.model.quantizer.dim: must be > 0, got 0",
    ]


def test_build_runs_validators_once_types_are_right(sample):
    with pytest.raises(ConfigError) as caught:
        build("quantizer", {"type": "sample-vq", "dim": 0, "beta": 2.0}, "$.model.quantizer")

    assert caught.value.problems == [
        "$.model.quantizer.dim: must be > 0, got 0",
        "$.model.quantizer.beta: must be in [0, 1], got 2.0",
    ]


@pytest.mark.parametrize(
    ("kind", "name", "where"),
    [
        ("task", "code-gpt", 'is a downstream model: it belongs under [downstream] type = "code-gpt"'),
        ("backbone", "vq", 'is a quantizer: it belongs under [model.quantizer] type = "vq"'),
        ("dataset", "reconstruction", 'is a task: it belongs under [[tasks]] type = "reconstruction"'),
    ],
)
def test_a_component_under_the_wrong_table_is_told_where_it_belongs(kind, name, where):
    from lgvq_core.registry import get_registry

    assert where in get_registry().unknown_message(kind, name)


def test_an_empty_list_of_a_kind_names_the_package_that_provides_it(monkeypatch):
    import importlib.metadata

    from lgvq_core.providers import kind_hint

    real = importlib.metadata.version

    def version(dist):
        if dist == "lgvq-text-encoders":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert kind_hint("text-encoder") == "; lgvq-text-encoders provides them: pip install lgvq-text-encoders"
    assert kind_hint("backbone") == ""  # lgvq-backbones is installed


def test_a_factory_module_that_cannot_be_imported_is_one_line_naming_plugin_component_and_module(tmp_path):
    from lgvq_core.errors import LgvqError
    from lgvq_core.registry import Registry
    from lgvq_core.specs import ComponentSpec, RegisteredComponent

    (tmp_path / "needs_missing.py").write_text(
        "import imaginary_dependency_xyz\n\ndef build(config, context):\n    pass\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        from lgvq_core.registry import get_registry

        registry: Registry = get_registry()
        spec = ComponentSpec(
            name="needs-missing",
            summary="x",
            config_cls=registry.get_spec("dataset", "shapes").config_cls,
            factory="needs_missing:build",
        )
        registry._components["dataset"]["needs-missing"] = RegisteredComponent(
            "dataset", spec, "acme", "acme-lgvq", "1.0"
        )
        with pytest.raises(LgvqError) as info:
            registry.build("dataset", {"type": "needs-missing"}, "$.data")
        message = str(info.value)
        assert message.startswith("$.data.type: plugin 'acme' (acme-lgvq 1.0), component 'needs-missing'")
        assert (
            "missing module 'imaginary_dependency_xyz'" in message and "pip install imaginary_dependency_xyz" in message
        )
        assert "\n" not in message
    finally:
        sys.path.remove(str(tmp_path))
        del get_registry()._components["dataset"]["needs-missing"]
