"""Faults injected into whole `lgvq run` processes: a full disk, a plugin that fails to load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_runner import run_dirs, tiny_run_file

from lgvq_core.runner.checkpoint import load_checkpoint, resolve_checkpoint

NO_TMPFS = 77


def _run_on_small_tmpfs(tmp_path: Path, size_kb: int, *args: str) -> subprocess.CompletedProcess:
    """``lgvq run ARGS`` with its runs folder on a tmpfs of ``size_kb`` (in a private mount
    namespace); the folder is copied to ``tmp_path/copy`` afterwards."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    mount_point = tmp_path / "runs"
    mount_point.mkdir()
    script = (
        f'mount -t tmpfs -o size={size_kb}k tmpfs "{mount_point}" || exit {NO_TMPFS}\n'
        f'"{sys.executable}" -m lgvq_core.cli run {" ".join(args)}\n'
        "rc=$?\n"
        f'cp -a "{mount_point}/." "{tmp_path / "copy"}/"\n'
        "exit $rc\n"
    )
    (tmp_path / "copy").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode == NO_TMPFS or "unshare failed" in out.stderr or "Operation not permitted" in out.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()[:200]}")
    return out


def test_a_full_disk_ends_the_run_with_one_clear_message_and_a_loadable_last_checkpoint(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, max_steps=30, checkpoint_every=1, val_every=1000, sample_every=1000)
    out = _run_on_small_tmpfs(tmp_path, 256, str(path))
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("lgvq run: error:")]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("lgvq run: error: no space left on device while writing "), errors
    assert "; the last complete checkpoint is " in errors[0]
    assert "Traceback" not in out.stderr
    (run_dir,) = list((tmp_path / "copy" / "tiny").iterdir())
    checkpoints = run_dir / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]  # no partial checkpoint
    messages: list[str] = []
    last = resolve_checkpoint(run_dir, "last", log=messages.append)
    assert messages == []
    _, state = load_checkpoint(last)
    assert 1 <= state["step"] < 30
    assert last.name in errors[0]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every line whole


def test_lgvq_run_prints_the_plugins_that_failed_to_load(tmp_path, fixture_plugin, monkeypatch):
    fixture_plugin("broken")
    monkeypatch.setenv("LGVQ_TEST_BROKEN_EXIT", "4")
    path = tiny_run_file(tmp_path, alignment=False, max_steps=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LGVQ_STRICT_PLUGINS": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", "run", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "warning: plugin 'broken' (lgvq-test-broken 0.0.1) failed: SystemExit: the plugin called sys.exit(4) "
        "while loading" in out.stderr
    )
    (run_dir,) = run_dirs(tmp_path, "tiny")
    failed = json.loads((run_dir / "plugins.json").read_text())["failed"]
    assert [f["name"] for f in failed] == ["broken"]
