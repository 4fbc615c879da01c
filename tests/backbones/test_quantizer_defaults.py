"""A backbone's default quantizer options apply whenever [model.quantizer] names the default's type.

The trap: under ``vqgan`` a ``[model.quantizer]`` table that says ``type = "vq"`` and no
``beta_placement`` must get taming's ``codebook`` placement, as a file without the table does, and
``resolved.toml`` must show it.
"""

from __future__ import annotations

import pytest

from lgvq_core.config.loader import parse_toml
from lgvq_core.run_file import validate_run_file as validate
from lgvq_core.runner.rundir import resolved_toml

HEAD = """
[model.backbone]
type = "vqgan"

[data]
type = "shapes"
"""


@pytest.fixture
def backbones(make_plugin_manager):
    return make_plugin_manager(["core", "testing", "backbones"])


def resolved_quantizer(text: str) -> dict:
    loaded = validate(parse_toml(text))
    resolved = parse_toml(resolved_toml(loaded.config, [], 1e-4))
    assert validate(resolved).config.model.quantizer == loaded.config.model.quantizer  # re-runnable
    return resolved["model"]["quantizer"]


def test_a_vq_table_without_beta_placement_keeps_the_backbones_codebook_placement(backbones):
    without_table = resolved_quantizer(HEAD)
    with_table = resolved_quantizer(HEAD + '\n[model.quantizer]\ntype = "vq"\n')
    assert without_table["beta_placement"] == with_table["beta_placement"] == "codebook"
    assert without_table == with_table
    assert with_table["type"] == "vq" and with_table["codebook_size"] == 1024 and with_table["dim"] == 256


def test_keys_the_table_gives_override_the_backbones_defaults(backbones):
    quantizer = resolved_quantizer(HEAD + '\n[model.quantizer]\ntype = "vq"\nbeta_placement = "commitment"\n')
    assert quantizer["beta_placement"] == "commitment" and quantizer["codebook_size"] == 1024


def test_a_quantizer_of_another_type_starts_from_its_own_defaults(backbones):
    quantizer = resolved_quantizer(HEAD + '\n[model.quantizer]\ntype = "cvq"\ncodebook_size = 64\n')
    assert quantizer["type"] == "cvq" and quantizer["beta_placement"] == "commitment"
    assert quantizer["codebook_size"] == 64 and quantizer["dim"] == 256
