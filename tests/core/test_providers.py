"""An unknown component of a kind that a missing lgvq package provides names the package to install;
lgvq-core knows its packages' kinds, not their components' names."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from lgvq_core import providers
from lgvq_core.errors import UnknownComponentError
from lgvq_core.registry import get_registry
from lgvq_core.specs import KINDS

OWN_PACKAGES = ("lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks", "lgvq-loggers")


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
        "lgvq-text-encoders provides text-encoder components and is not installed: pip install lgvq-text-encoders"
    )


def test_with_every_providing_package_installed_there_is_no_install_hint(make_plugin_manager):
    make_plugin_manager(["core"])

    message = get_registry().unknown_message("backbone", "VQGAN")

    assert message == "$: unknown backbone 'VQGAN'. No backbone is installed."  # lgvq-backbones is installed here


def test_a_test_double_says_how_to_opt_in(make_plugin_manager):
    make_plugin_manager(["core"])

    assert (
        get_registry()
        .unknown_message("backbone", "tiny-ae")
        .endswith("'tiny-ae' is one of lgvq-core's test doubles: set LGVQ_TEST_COMPONENTS=1 to use it.")
    )


def test_a_kind_no_missing_package_provides_gets_no_hint(without_text_encoders):
    assert providers.install_hint("alignment_loss", "my-own-loss") == ""
    assert providers.install_hint("text_encoder", "my-own-encoder").endswith("pip install lgvq-text-encoders")


def test_the_table_lists_the_kinds_each_of_lgvqs_packages_registers(make_plugin_manager):
    make_plugin_manager(["core", "backbones", "text-encoders", "tasks", "loggers"])
    registry = get_registry()

    registered: dict[str, set[str]] = {}
    for kind in KINDS:
        for entry in registry.entries(kind):
            if entry.distribution in OWN_PACKAGES:
                registered.setdefault(entry.distribution, set()).add(kind)

    assert registered == {dist: set(kinds) for dist, kinds in providers.PACKAGES.items()}


def test_core_names_none_of_its_plugins_components():
    """The providers table is package metadata: no component name of a plugin package in it."""
    text = Path(providers.__file__).read_text(encoding="utf-8")
    for name in ("vqgan", "vqvae", "cvq", "vqct", "open_clip", "minilm", "code-gpt", "captioning", "reconstruction"):
        assert f'"{name}"' not in text
