"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_runs import tokenizer_run_file

from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train


@pytest.fixture(scope="session")
def tokenizer_run(tmp_path_factory) -> Path:
    """A trained tiny tokenizer run directory (trained once for the session)."""
    root = tmp_path_factory.mktemp("tokenizer")
    return train(load_run_file(tokenizer_run_file(root))).run_dir
