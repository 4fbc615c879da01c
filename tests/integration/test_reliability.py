"""Faults injected into whole runs: a full disk, a plugin that fails to load, diverging weights,
a NaN validation loss, too little data."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_runner import run_dirs, tiny_run_file, train_records

from lgvq_core.errors import NonFiniteLossError
from lgvq_core.plugins import hookimpl
from lgvq_core.registry import get_plugin_manager
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.checkpoint import load_checkpoint, resolve_checkpoint
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics

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


@pytest.mark.parametrize("command", [["check", "RUN_FILE"], ["schema", "run"], ["eval", "RUN_FILE"]])
def test_every_command_that_loads_plugins_names_the_one_that_failed(tmp_path, fixture_plugin, monkeypatch, command):
    fixture_plugin("broken")
    monkeypatch.setenv("LGVQ_TEST_BROKEN_EXIT", "4")
    path = tiny_run_file(tmp_path, alignment=False, max_steps=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LGVQ_STRICT_PLUGINS": "0"}
    args = [str(path) if part == "RUN_FILE" else part for part in command]
    out = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = "warning: plugin 'broken' (lgvq-test-broken 0.0.1) failed: SystemExit: the plugin called sys.exit(4)"
    assert sum(line in row for row in out.stderr.splitlines()) == 1, out.stderr  # once, whatever the outcome


# ---------------------------------------------------------------------------------------------
# the NaN guard
# ---------------------------------------------------------------------------------------------
class _AbsurdLearningRate:
    """From the update of step ``from_step`` on, the generator's learning rate is 1e30: that
    update leaves huge but finite weights, and the next loss is not finite."""

    def __init__(self, from_step: int) -> None:
        self.from_step = from_step

    @hookimpl
    def lgvq_train_batch_end(self, run, metrics):
        if run.step == self.from_step - 1:
            for group in run.optimizers.model.param_groups:
                group["lr"] = 1e30


class _NaNWhenEvaluating:
    """Validation (and every other eval-mode forward) reconstructs NaN; training is untouched."""

    @hookimpl
    def lgvq_train_start(self, run):
        def poison(module, inputs, output):
            return output if module.training else output * float("nan")

        run.model.decoder.register_forward_hook(poison)


def _train_with(plugin, path, overrides=()):
    manager = get_plugin_manager()
    manager.register(plugin, name="fault")
    try:
        with pytest.raises(NonFiniteLossError) as info:
            train(load_run_file(path, overrides=list(overrides)))
    finally:
        manager.unregister(plugin)
    return info.value


def test_a_diverged_update_is_never_checkpointed_and_the_last_good_one_resumes_exactly(tmp_path):
    options = dict(alignment=False, checkpoint_every=2, max_steps=4, val_every=100, sample_every=100)
    path = tiny_run_file(tmp_path, name="diverges", **options)
    error = _train_with(_AbsurdLearningRate(from_step=4), path, ["train.max_steps=8"])
    (run_dir,) = run_dirs(tmp_path, "diverges")
    checkpoints = run_dir / "checkpoints"
    # step 4's update was absurd: its weights were finite, and saved as pending, but step 5's loss was not
    assert error.step == 5 and error.what == "loss term", str(error)
    kept = resolve_checkpoint(run_dir, "last", log=pytest.fail)
    _, state = load_checkpoint(kept)
    assert state["step"] == 2
    assert f"The last good checkpoint is {kept} (step 2)" in str(error)
    steps = sorted(json.loads((checkpoints / f"{p}.json").read_text())["step"] for p in ("last",))
    assert steps == [2] and not (checkpoints / "pending.json").exists()
    assert not [p for p in checkpoints.iterdir() if p.name.startswith("step-0000004")]  # the diverged one is gone

    # the kept checkpoint resumes bit-exactly: steps 3 and 4 as in a run that never diverged
    resumed = train(load_run_file(run_dir / "resolved.toml", overrides=["train.max_steps=4"]), resume_dir=run_dir)
    straight = train(load_run_file(tiny_run_file(tmp_path, name="straight", **options)))
    got, expected = train_records(resumed.run_dir), train_records(straight.run_dir)
    for step in (3, 4):
        for term in ("loss", "rec_loss", "quantizer_loss"):
            assert got[step][term] == expected[step][term], (step, term)


def test_a_nan_validation_loss_stops_the_run_and_saves_nothing_from_those_weights(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, checkpoint_every=2, max_steps=8, val_every=3, sample_every=100)
    error = _train_with(_NaNWhenEvaluating(), path)
    assert (error.step, error.what, error.term) == (3, "validation loss term", "loss")
    (run_dir,) = run_dirs(tmp_path, "tiny")
    checkpoints = run_dir / "checkpoints"
    assert not (checkpoints / "best.json").exists()
    kept = resolve_checkpoint(run_dir, "last", log=pytest.fail)
    assert load_checkpoint(kept)[1]["step"] == 2  # proven by step 3's finite training loss
    assert f"The last good checkpoint is {kept} (step 2)" in str(error)
    val = [r for r in read_metrics(run_dir) if r["split"] == "val"]
    assert [r["step"] for r in val] == [3] and math.isnan(val[0]["rec_loss"])  # recorded, then stopped


def test_divergence_before_any_checkpoint_says_there_is_none(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, checkpoint_every=5, max_steps=8, val_every=100)
    error = _train_with(_AbsurdLearningRate(from_step=2), path)
    assert error.step == 3
    assert "No checkpoint was written before this step, so there is nothing to resume from" in str(error)
    (run_dir,) = run_dirs(tmp_path, "tiny")
    assert list((run_dir / "checkpoints").iterdir()) == []


class _AbsurdLastStep(_AbsurdLearningRate):
    """The absurd update is the last one: a callback asks the run to stop after it."""

    @hookimpl
    def lgvq_train_batch_end(self, run, metrics):
        super().lgvq_train_batch_end(run, metrics)
        if run.step == self.from_step:
            run.request_stop("test-stop")


def test_the_checkpoint_at_a_stop_is_probed_before_it_is_written(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, checkpoint_every=2, max_steps=8, val_every=100)
    error = _train_with(_AbsurdLastStep(from_step=4), path)
    # no training loss follows step 4 and no validation ran: the probe on validation images catches it
    assert error.step == 4 and error.what == "loss term (of the weights to save)", str(error)
    (run_dir,) = run_dirs(tmp_path, "tiny")
    assert load_checkpoint(resolve_checkpoint(run_dir, "last", log=pytest.fail))[1]["step"] == 2


def test_a_batch_larger_than_the_data_fails_before_a_run_directory_exists(tmp_path):
    from PIL import Image

    root = tmp_path / "folder"
    root.mkdir()
    lines = []
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 100, 200)).save(root / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"picture {i}"}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    path = tiny_run_file(tmp_path, alignment=False, batch_size=4, max_steps=1)
    path.write_text(
        path.read_text().replace(
            'type = "shapes"\nimage_size = 32\nnum_train = 64\nnum_val = 8',
            f'type = "image-text-folder"\nroot = "{root}"\ntrain_file = "data.jsonl"\nval_file = "data.jsonl"\n'
            "image_size = 8",
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", "run", str(path)],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert "the training split has 3 items, fewer than one global batch (4 x 1 processes)" in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
