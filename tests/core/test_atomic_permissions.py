"""Files lgvq writes atomically get the permissions the user's umask gives any new file."""

from __future__ import annotations

import os
import stat

import pytest

from lgvq_core.atomic import write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_text_atomic(tmp_path / "resolved.toml", "x = 1\n")
    write_json_atomic(tmp_path / "last.json", {"dir": "step-0000001"})
    for name in ("resolved.toml", "last.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_replacing_a_file_keeps_the_umask_mode_and_leaves_no_temporary(tmp_path, umask):
    umask(0o022)
    write_text_atomic(tmp_path / "a.txt", "old")
    write_text_atomic(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
