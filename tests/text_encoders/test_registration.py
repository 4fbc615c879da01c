"""lgvq-text-encoders as a plugin: its components, their documented options, the plugin contract."""

from __future__ import annotations

import attrs
import pytest

from lgvq_core.errors import ConfigError
from lgvq_core.run_file import load_run_file
from lgvq_core.testing.contract import PluginContract
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file
from lgvq_text_encoders.config import MiniLMConfig, OpenClipConfig


class TestTextEncodersPlugin(PluginContract):
    plugin = "text-encoders"


def test_both_encoders_are_listed(lgvq_cli):
    result = lgvq_cli("list", "text-encoder")
    assert result.code == 0
    assert "open_clip" in result.out and "minilm" in result.out


@pytest.mark.parametrize(("name", "config_cls"), [("open_clip", OpenClipConfig), ("minilm", MiniLMConfig)])
def test_schema_documents_every_option(lgvq_cli, name, config_cls):
    result = lgvq_cli("schema", "text-encoder", name)
    assert result.code == 0
    for field in attrs.fields(config_cls):
        assert f"  {field.name} " in result.out, field.name
    assert "hf-hub:" in result.out or name == "minilm"


def test_open_clip_name_accepts_a_hyphen(lgvq_cli):
    assert lgvq_cli("schema", "text-encoder", "open-clip").code == 0


def test_lgvq_check_reports_a_context_length_the_encoder_cannot_hold(tmp_path):
    run = {**TINY_RUN, "run": {**TINY_RUN["run"], "output_dir": str(tmp_path)}}
    run["text_encoder"] = {"type": "minilm", "context_length": 513}
    with pytest.raises(ConfigError) as raised:
        load_run_file(write_run_file(run, tmp_path / "run.toml"))
    assert any(
        p.startswith("$.text_encoder.context_length: 513 exceeds the 512 positions") for p in raised.value.problems
    )
