"""A full disk while writing metrics, run files or samples: one clear error, no partial line or
file that anything reads; every reader of metrics.jsonl tolerates a line cut short."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from lgvq_core.atomic import write_text_atomic
from lgvq_core.errors import DiskFullError
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner import rundir
from lgvq_core.runner.rundir import MetricsWriter, read_metrics


def _run_dir(tmp_path: Path) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    import torch

    good = ckpt.save_checkpoint(run_dir / "checkpoints", 4, {"tokenizer.w": torch.ones(2)}, {}, ["last"])
    return run_dir, good


def _fsync_fails_once(monkeypatch, module) -> None:
    real = os.fsync
    state = {"failed": False}

    def fsync(fd):
        if not state["failed"]:
            state["failed"] = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(module.os, "fsync", fsync)


def test_a_metrics_write_on_a_full_disk_leaves_no_cut_line_and_names_the_last_checkpoint(tmp_path, monkeypatch):
    run_dir, good = _run_dir(tmp_path)
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    writer.write({"step": 1, "split": "train", "loss": 1.5})
    before = (run_dir / "metrics.jsonl").read_bytes()
    _fsync_fails_once(monkeypatch, rundir)
    with pytest.raises(DiskFullError) as info:
        writer.write({"step": 2, "split": "train", "loss": 1.25})
    assert str(info.value).startswith(
        f"no space left on device while writing {run_dir / 'metrics.jsonl'}; the last complete checkpoint is {good}"
    )
    assert (run_dir / "metrics.jsonl").read_bytes() == before  # the half-written line was cut off again


def test_an_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    run_dir, good = _run_dir(tmp_path)
    target = run_dir / "resolved.toml"
    target.write_text("old = 1\n")
    import lgvq_core.atomic as atomic

    _fsync_fails_once(monkeypatch, atomic)
    with pytest.raises(DiskFullError, match="while writing .*resolved.toml; the last complete checkpoint is"):
        write_text_atomic(target, "new = 2\n")
    assert target.read_text() == "old = 1\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "resolved.toml"]


def test_without_any_checkpoint_the_message_says_so(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    import lgvq_core.atomic as atomic

    _fsync_fails_once(monkeypatch, atomic)
    with pytest.raises(DiskFullError, match="the last complete checkpoint is none"):
        write_text_atomic(run_dir / "plugins.json", "{}")


CUT = '{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "split": "val", "rec_loss": 0.5}\n{"step": 3, "spl'


def test_readers_of_metrics_tolerate_a_cut_last_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(CUT)
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    writer.truncate_after(5)  # a resume: the cut line goes, the whole ones stay
    writer.write({"step": 3, "split": "train", "loss": 0.75})
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_compare_tables_a_run_whose_metrics_end_in_a_cut_line(tmp_path):
    from lgvq_core.runner.compare import compare_runs

    runs = []
    for name in ("a", "b"):
        run_dir = tmp_path / name / "20260101-000000-abcdef"
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "resolved.toml").write_text(f'[run]\nname = "{name}"\n')
        (run_dir / "metrics.jsonl").write_text(CUT)
        (run_dir / "eval" / "reconstruction.json").write_text(
            json.dumps({"task": "reconstruction", "step": 2, "metrics": {"psnr": 20.0}})
        )
        runs.append(run_dir)
    result = compare_runs(runs, out_dir=tmp_path / "out")
    assert "reconstruction" in json.dumps(result, default=str)
