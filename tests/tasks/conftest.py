"""Fixtures of the task tests (the hand-made stand-ins live in task_doubles.py)."""

from __future__ import annotations

import pytest
from task_doubles import tiny_text

from lgvq_core.testing.doubles import TinyText


@pytest.fixture
def text_encoder() -> TinyText:
    """A tiny frozen text encoder (W = E = 16, V = 64, L = 12)."""
    return tiny_text()
