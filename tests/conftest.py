"""Shared test setup: offline, strict plugins, lgvq's pytest fixtures, the test plugin distributions."""

import os
from pathlib import Path

import pytest

# Never reach a model hub: a hub attempt without network hangs for ~45 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Every plugin failure is fatal in tests (a broken plugin must not hide behind a warning);
# tests of the tolerant behaviour build managers with strict=False or unset it themselves.
os.environ.setdefault("LGVQ_STRICT_PLUGINS", "1")

pytest_plugins = ["lgvq_core.testing.fixtures"]

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


@pytest.fixture
def fixture_plugin(install_plugin):
    """``fixture_plugin("sample")``: tests/fixtures/plugins/lgvq-test-sample installed for this test only."""
    return lambda name: install_plugin(FIXTURE_PLUGINS / f"lgvq-test-{name}")
