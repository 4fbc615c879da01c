"""Unknown components that lgvq's own packages provide name the package to install."""

from __future__ import annotations

import importlib.metadata

import pytest

from lgvq_core import providers
from lgvq_core.errors import UnknownComponentError
from lgvq_core.registry import get_registry
from lgvq_core.specs import KINDS

OWN_PACKAGES = ("lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks")


@pytest.fixture
def without_text_encoders(monkeypatch):
    """lgvq-text-encoders not installed, as far as the hint can tell."""
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "lgvq-text-encoders":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(providers.importlib.metadata, "version", version)


def test_an_unknown_text_encoder_says_which_package_to_install(make_plugin_manager, without_text_encoders):
    make_plugin_manager(["core", "testing"])

    with pytest.raises(UnknownComponentError) as caught:
        get_registry().get("text-encoder", "minilm", "$.text_encoder.type")

    assert str(caught.value) == (
        "$.text_encoder.type: unknown text-encoder 'minilm'. Available: tiny-text. "
        "'minilm' is provided by lgvq-text-encoders, which is not installed: pip install lgvq-text-encoders"
    )


def test_an_installed_package_that_did_not_register_it_points_at_lgvq_plugins(make_plugin_manager):
    make_plugin_manager(["core"])

    message = get_registry().unknown_message("backbone", "VQGAN")

    assert message.endswith(
        "'VQGAN' is provided by lgvq-backbones, which is installed but did not register it: see `lgvq plugins`."
    )


def test_a_test_double_says_how_to_opt_in(make_plugin_manager):
    make_plugin_manager(["core"])

    assert (
        get_registry()
        .unknown_message("backbone", "tiny-ae")
        .endswith("'tiny-ae' is one of lgvq-core's test doubles: set LGVQ_TEST_COMPONENTS=1 to use it.")
    )


def test_a_name_no_lgvq_package_provides_gets_no_hint():
    assert providers.install_hint("backbone", "my-own-net") == ""


def test_the_table_lists_exactly_what_lgvqs_packages_register(make_plugin_manager):
    make_plugin_manager(["core", "backbones", "text-encoders", "tasks"])
    registry = get_registry()

    registered = {
        kind: {entry.name: entry.distribution for entry in registry.entries(kind) if entry.distribution in OWN_PACKAGES}
        for kind in KINDS
    }

    assert {kind: names for kind, names in registered.items() if names} == providers.PROVIDERS
