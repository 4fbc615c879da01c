"""Checkpoints under injected faults: a kill between any two filesystem operations, corrupt or
missing pointers, flipped bits, pointers that lead outside ``checkpoints/``, and a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from lgvq_core import checkpoint_files
from lgvq_core.errors import CheckpointError, DiskFullError
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner import pointers


class Killed(BaseException):
    """The process died here: nothing after this point runs (not even cleanup)."""


class FaultInjector:
    """Counts filesystem operations (renames, deletions, file writes) and kills at the ``kill_at``-th."""

    def __init__(self, monkeypatch, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.count = 0
        self.dead = False
        self.names: list[str] = []
        for owner, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (ckpt, "_write_file")):
            monkeypatch.setattr(owner, name, self._wrap(name, getattr(owner, name)))

    def _wrap(self, name, real):
        def operation(*args, **kwargs):
            if self.dead:
                raise Killed(name)
            if self.kill_at is not None and self.count == self.kill_at:
                self.dead = True
                raise Killed(name)
            self.count += 1
            self.names.append(name)
            return real(*args, **kwargs)

        return operation


def _tensors(step: int) -> dict[str, torch.Tensor]:
    return {"tokenizer.weight": torch.full((3, 2), float(step)), "tokenizer.bias": torch.arange(4.0) + step}


def _save(folder: Path, step: int, pointers: list[str]) -> Path:
    return ckpt.save_checkpoint(folder, step, _tensors(step), {"note": f"step {step}"}, pointers)


def _loaded_step(run_dir: Path, which: str, messages: list[str]) -> int:
    path = ckpt.resolve_checkpoint(run_dir, which, log=messages.append)
    tensors, state = ckpt.load_checkpoint(path)
    assert torch.equal(tensors["tokenizer.weight"], torch.full((3, 2), float(state["step"])))
    assert state["note"] == f"step {state['step']}"
    return int(state["step"])


def _history(run_dir: Path) -> None:
    """last at 1, best at 2, then last re-saved at 2 (the same-step re-save of the report)."""
    folder = run_dir / "checkpoints"
    _save(folder, 1, ["last"])
    _save(folder, 2, ["best"])
    _save(folder, 2, ["last"])


def _next_saves(folder: Path) -> None:
    """What a run does next: best at step 3, a periodic checkpoint at 3 (pending, then proven by
    step 4's loss), and last at the end of the run at step 4."""
    _save(folder, 3, ["best"])
    _save(folder, 3, [checkpoint_files.PENDING])
    pointers.promote_pending(folder)
    _save(folder, 4, ["last"])


def test_a_kill_between_any_two_filesystem_operations_loses_no_checkpoint(tmp_path, monkeypatch):
    template = tmp_path / "template"
    _history(template)
    with monkeypatch.context() as counting:
        probe = FaultInjector(counting, kill_at=None)
        shutil.copytree(template, tmp_path / "probe")
        probe.count, probe.names = 0, []
        _next_saves(tmp_path / "probe" / "checkpoints")
        total = probe.count
    assert total >= 8 and {"replace", "rmtree", "_write_file"} <= set(probe.names)
    for kill_at in range(total + 1):
        run_dir = tmp_path / f"kill-{kill_at}"
        shutil.copytree(template, run_dir)
        with monkeypatch.context() as faults:
            FaultInjector(faults, kill_at=kill_at)
            try:
                _next_saves(run_dir / "checkpoints")
            except Killed:
                pass
        messages: list[str] = []
        # the pointers never name anything missing: no fallback is needed at any point
        last = _loaded_step(run_dir, "last", messages)
        best = _loaded_step(run_dir, "best", messages)
        assert last in (2, 3, 4) and best in (2, 3), kill_at
        assert messages == [], (kill_at, messages)
        # a restart (the next save prunes and recovers) keeps both and the run goes on
        _save(run_dir / "checkpoints", 5, ["last"])
        assert _loaded_step(run_dir, "best", messages) == best
        assert _loaded_step(run_dir, "last", messages) == 5
        assert messages == []
        leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
        assert leftovers == [], (kill_at, leftovers)


def test_a_legacy_dot_old_copy_is_moved_back_instead_of_deleted(tmp_path):
    """Format 1 renamed ``step-N`` to ``.step-N.<id>.old`` before a same-step re-save."""
    folder = tmp_path / "checkpoints"
    final = _save(folder, 2, ["best"])
    (folder / "best.json").write_text(json.dumps({"dir": "step-0000002", "step": 2}))
    os.replace(final, folder / ".step-0000002.1234abcd.old")
    pointers.prune_checkpoints(folder)
    messages: list[str] = []
    assert _loaded_step(tmp_path, "best", messages) == 2 and messages == []
    assert (folder / "step-0000002").is_dir()


def test_previous_keeps_the_last_checkpoint_before_the_newest(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _save(folder, step, ["last"])
    steps = sorted(json.loads((folder / f"{p}.json").read_text())["step"] for p in ("last", "previous"))
    assert steps == [2, 3]
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 2  # step 1 was pruned, never step 2


@pytest.mark.parametrize("damage", ["flip-a-bit", "delete-pointer", "garbage-pointer", "truncate-state"])
def test_a_damaged_last_falls_back_to_the_newest_complete_checkpoint_saying_so(tmp_path, damage):
    folder = tmp_path / "checkpoints"
    _save(folder, 1, ["last"])
    _save(folder, 2, ["best"])
    newest = _save(folder, 3, ["last"])
    if damage == "flip-a-bit":
        data = bytearray((newest / checkpoint_files.MODEL_FILE).read_bytes())
        data[-3] ^= 0x01
        (newest / checkpoint_files.MODEL_FILE).write_bytes(bytes(data))
    elif damage == "delete-pointer":
        (folder / "last.json").unlink()
    elif damage == "garbage-pointer":
        (folder / "last.json").write_text('{"dir": ')
    else:
        data = (newest / checkpoint_files.STATE_FILE).read_bytes()
        (newest / checkpoint_files.STATE_FILE).write_bytes(data[: len(data) // 2])
    messages: list[str] = []
    expected = 3 if damage in ("delete-pointer", "garbage-pointer") else 2
    assert _loaded_step(tmp_path, "last", messages) == expected
    assert len(messages) == 1 and "using the newest complete checkpoint instead" in messages[0]
    assert "last.json" in messages[0] or str(newest) in messages[0]


def test_a_flipped_bit_never_loads_silently(tmp_path):
    path = _save(tmp_path / "checkpoints", 5, ["last"])
    data = bytearray((path / checkpoint_files.STATE_FILE).read_bytes())
    data[len(data) // 2] ^= 0x10
    (path / checkpoint_files.STATE_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256") as info:
        ckpt.load_checkpoint(path)
    assert str(path / checkpoint_files.STATE_FILE) in str(info.value)
    with pytest.raises(CheckpointError) as info:
        ckpt.resolve_checkpoint(tmp_path, "last", log=lambda m: None)
    message = str(info.value)  # not "the run saved none yet": one was saved and no longer verifies
    assert f"1 checkpoint folder(s) in {tmp_path / 'checkpoints'} ({path.name}) and none verifies" in message
    assert "saved none yet" not in message and "\n" not in message


def test_a_run_that_saved_no_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="the run saved none yet"):
        ckpt.resolve_checkpoint(tmp_path, "last", log=lambda m: None)


@pytest.mark.parametrize("target", ["../../outside", "/etc", "step-0000001-deadbeef/../../x", "linked"])
def test_a_pointer_may_not_lead_outside_checkpoints(tmp_path, target):
    folder = tmp_path / "checkpoints"
    good = _save(folder, 1, ["last"])
    outside = tmp_path / "outside"
    shutil.copytree(good, outside)  # a complete checkpoint, but not inside checkpoints/
    if target == "linked":
        (folder / "step-0000009-abcdef12").symlink_to(outside, target_is_directory=True)
        target = "step-0000009-abcdef12"
    (folder / "best.json").write_text(json.dumps({"dir": target, "step": 9}))
    messages: list[str] = []
    path = ckpt.resolve_checkpoint(tmp_path, "best", log=messages.append)
    assert path == good
    assert len(messages) == 1 and ("outside" in messages[0] or "not a checkpoint directory" in messages[0])


def test_a_checkpoint_without_manifest_is_incomplete(tmp_path):
    path = _save(tmp_path / "checkpoints", 1, ["last"])
    (path / checkpoint_files.MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize(
    ("version", "advice"),
    [
        (checkpoint_files.FORMAT_VERSION + 1, "newer lgvq-core; upgrade lgvq-core"),
        (None, "not written by this lgvq-core"),
    ],
)
def test_a_checkpoint_of_another_format_is_refused_naming_both_formats(tmp_path, version, advice):
    path = _save(tmp_path / "checkpoints", 1, ["last"])
    manifest = json.loads((path / checkpoint_files.MANIFEST_FILE).read_text())
    assert manifest["format_version"] == checkpoint_files.FORMAT_VERSION
    if version is None:
        del manifest["format_version"]
    else:
        manifest["format_version"] = version
    (path / checkpoint_files.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError, match=f"checkpoint format {version!r}, this lgvq-core reads format 2: .*{advice}"
    ):
        ckpt.load_checkpoint(path)


def test_a_refused_pickle_never_repeats_the_weights_only_false_advice(tmp_path):
    path = _save(tmp_path / "checkpoints", 1, ["last"])

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"step": 1, "evil": Payload()}, buffer)
    data = buffer.getvalue()
    (path / checkpoint_files.STATE_FILE).write_bytes(data)
    manifest = json.loads((path / checkpoint_files.MANIFEST_FILE).read_text())
    manifest["files"][checkpoint_files.STATE_FILE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / checkpoint_files.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert "never unpickles" in message and "getcwd" in message
    assert "weights_only" not in message and "will likely succeed" not in message


def _full_after(limit: int):
    """A ``_write_file`` that writes ``limit`` bytes in all, then fails like a full disk."""
    written = {"total": 0}
    real = ckpt._write_file

    def write(path: Path, data: bytes) -> None:
        room = max(0, limit - written["total"])
        if len(data) > room:
            path.write_bytes(data[:room])
            written["total"] += room
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written["total"] += len(data)
        real(path, data)

    return write


def test_disk_full_during_a_checkpoint_save_is_one_clear_error_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    good = _save(folder, 1, ["last"])
    before = sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(ckpt, "_write_file", _full_after(100))
    with pytest.raises(DiskFullError) as info:
        _save(folder, 2, ["last", "best"])
    message = str(info.value)
    assert message.startswith("no space left on device while writing ")
    assert str(folder) in message and checkpoint_files.MODEL_FILE in message
    assert f"the last complete checkpoint is {good}" in message
    assert sorted(p.name for p in folder.iterdir()) == before  # no temporary, pointers untouched
    assert _loaded_step(tmp_path, "last", []) == 1


def test_disk_full_while_replacing_a_pointer_keeps_the_old_pointer(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    good = _save(folder, 1, ["last"])
    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:3])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullFile(real_fdopen(fd, mode)))
    with pytest.raises(DiskFullError) as info:
        _save(folder, 2, ["last"])
    assert "last.json" in str(info.value) or "previous.json" in str(info.value)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [good.name]  # nothing unnamed is left
    assert ckpt.resolve_checkpoint(tmp_path, "last", log=pytest.fail) == good


def test_a_pending_checkpoint_moves_last_only_when_promoted_and_is_never_a_fallback(tmp_path):
    folder = tmp_path / "checkpoints"
    proven = _save(folder, 2, ["last"])
    pending = _save(folder, 4, [checkpoint_files.PENDING])
    assert checkpoint_files.pending_step(folder) == 4
    assert ckpt.resolve_checkpoint(tmp_path, "last", log=pytest.fail) == proven
    (folder / "last.json").unlink()  # even with last gone, the newer unproven one is not used
    assert checkpoint_files.last_complete_checkpoint(folder) == proven
    (folder / "last.json").write_text(json.dumps({"dir": proven.name, "step": 2}))
    assert pointers.promote_pending(folder) == pending
    assert ckpt.resolve_checkpoint(tmp_path, "last", log=pytest.fail) == pending
    assert json.loads((folder / "previous.json").read_text())["step"] == 2
    assert checkpoint_files.pending_step(folder) is None


def test_a_discarded_pending_checkpoint_is_removed_and_the_proven_one_stays(tmp_path):
    folder = tmp_path / "checkpoints"
    proven = _save(folder, 2, ["last"])
    pending = _save(folder, 4, [checkpoint_files.PENDING])
    pointers.discard_pending(folder)
    assert not pending.exists() and proven.exists()
    assert checkpoint_files.good_checkpoint(folder) == (proven, 2)


def test_a_checkpoint_folder_swapped_behind_its_pointer_is_not_used(tmp_path):
    folder = tmp_path / "checkpoints"
    older = _save(folder, 1, ["best"])
    newest = _save(folder, 2, ["last"])
    shutil.rmtree(newest)
    shutil.copytree(older, newest)  # consistent with its own manifest, but not what last.json recorded
    messages: list[str] = []
    assert _loaded_step(tmp_path, "last", messages) == 1  # the content of step 1, wherever it lies
    assert "does not match the SHA-256 its pointer recorded" in messages[0]


def test_weights_of_another_shape_are_one_line_naming_the_tensor_and_both_shapes(tmp_path):
    module = torch.nn.Linear(2, 3)
    tensors = {"tokenizer.weight": torch.zeros(4, 2), "tokenizer.bias": torch.zeros(4)}
    with pytest.raises(CheckpointError) as info:
        ckpt.load_module(module, tensors, "tokenizer", tmp_path / "step-1")
    message = str(info.value)
    assert "\n" not in message and "weight: (4, 2) in the checkpoint, (3, 2) in the model" in message
    assert "bias: (4,) in the checkpoint, (3,) in the model" in message
    assert "was the [model] section changed" in message
