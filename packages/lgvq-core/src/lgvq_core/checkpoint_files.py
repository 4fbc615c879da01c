"""What a ``checkpoints/`` folder holds, read and verified: manifests, pointer records, the newest
checkpoint that can be trusted. Nothing here writes, and nothing here needs torch.

Layout (``checkpoints/`` of a run directory)::

    step-0000120-<id>/model.safetensors  tokenizer (``tokenizer.*``), alignment heads (``alignment.*``),
                                         discriminator (``discriminator.*``); never the text encoder
    step-0000120-<id>/state.pt           optimizers, scalers, step, data position, RNG states, callback
                                         state: plain tensors and containers (weights_only=True)
    step-0000120-<id>/manifest.json      format version, step, id, and the SHA-256 and size of both files
    last.json, best.json, previous.json  pointers: {"dir": "step-0000120-<id>", "step": 120, ...}
    pending.json                         a checkpoint written but not yet shown good

A checkpoint counts only if both files match the SHA-256 of its manifest, so a flipped bit is an
error, never a silently different model, and only if its manifest's ``format_version`` is the one
this lgvq-core reads. A pointer may only name a directory directly inside ``checkpoints/``. Writing
is :mod:`lgvq_core.runner.checkpoint`; moving pointers is :mod:`lgvq_core.runner.pointers`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lgvq_core.errors import CheckpointError, DiskFullError

MODEL_FILE = "model.safetensors"

STATE_FILE = "state.pt"

MANIFEST_FILE = "manifest.json"

FORMAT_VERSION = 2

POINTERS = ("last", "previous", "best")

PENDING = "pending"

_DIR_NAME = re.compile(r"^step-\d{7,}-[0-9a-f]{8,32}$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_pointer(checkpoint_dir: Path, pointer: str) -> tuple[dict[str, Any] | None, str | None]:
    """A pointer's record, or ``None`` and what is wrong with it."""
    path = checkpoint_dir / f"{pointer}.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable ({exc})"
    problem = pointer_problem(checkpoint_dir, record)
    if problem is not None:
        return None, f"{path}: {problem}"
    return record, None


def pointer_problem(checkpoint_dir: Path, record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("dir"), str):
        return 'not a checkpoint pointer (expected {"dir": ..., "step": ...})'
    name = record["dir"]
    if not _DIR_NAME.match(name) and not re.match(r"^step-\d+$", name):
        return f"names {name!r}, which is not a checkpoint directory inside {checkpoint_dir}"
    target = (checkpoint_dir / name).resolve()
    if target.parent != checkpoint_dir.resolve():
        return f"names {name!r}, which resolves outside {checkpoint_dir} (refused)"
    return None


def pointer_step(checkpoint_dir: Path, pointer: str) -> int | None:
    """The step a pointer (``last``, ``best``, ``pending``) names (``None``: no usable pointer)."""
    record, _ = read_pointer(checkpoint_dir, pointer)
    try:
        return None if record is None else int(record.get("step", -1))
    except (TypeError, ValueError):
        return None


def pending_step(checkpoint_dir: Path) -> int | None:
    """The step of the pending checkpoint (``None`` when there is none)."""
    return pointer_step(checkpoint_dir, PENDING)


def good_checkpoint(checkpoint_dir: Path) -> tuple[Path | None, int | None]:
    """The last good checkpoint and its step (``(None, None)`` when the run has none)."""
    path = last_complete_checkpoint(checkpoint_dir)
    if path is None:
        return None, None
    try:
        return path, int(read_manifest(path)["step"])
    except CheckpointError:
        return path, None


def referenced_dirs(checkpoint_dir: Path) -> set[str]:
    names = set()
    for pointer in checkpoint_dir.glob("*.json"):
        try:
            record = json.loads(pointer.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("dir"), str):
            names.add(record["dir"])
    return names


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a checkpoint directory (raises :class:`CheckpointError` when unusable)."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        files = manifest["files"]
        for file in (MODEL_FILE, STATE_FILE):
            str(files[file]["sha256"])
            int(files[file]["bytes"])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MANIFEST_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / MANIFEST_FILE}: unreadable checkpoint manifest ({exc})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version > FORMAT_VERSION:
            advice = "it was written by a newer lgvq-core; upgrade lgvq-core to read it"
        else:
            advice = "it was not written by this lgvq-core's checkpoint code; train the run again or convert it"
        raise CheckpointError(
            f"{path / MANIFEST_FILE}: checkpoint format {version!r}, this lgvq-core reads format {FORMAT_VERSION}: "
            f"{advice}"
        )
    return manifest


def verified_bytes(path: Path, manifest: dict[str, Any], file: str) -> bytes:
    try:
        data = (path / file).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {file})") from None
    except OSError as exc:
        raise CheckpointError(f"{path / file}: unreadable ({exc})") from None
    expected = manifest["files"][file]
    if len(data) != int(expected["bytes"]) or sha256(data) != expected["sha256"]:
        raise CheckpointError(
            f"{path / file}: content does not match the checkpoint's manifest (SHA-256 differs; the file "
            "is corrupt or was modified). Use another checkpoint (e.g. --checkpoint best, or resume "
            "falls back to the newest one that verifies)"
        )
    return data


def verify_checkpoint(path: Path, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest (and the hashes its pointer ``record``
    holds, when given); returns the manifest."""
    manifest = read_manifest(path)
    if record is not None and "files" in record and record["files"] != manifest["files"]:
        raise CheckpointError(
            f"{path}: its manifest does not match the SHA-256 its pointer recorded (the folder was changed)"
        )
    for file in (MODEL_FILE, STATE_FILE):
        verified_bytes(path, manifest, file)
    return manifest


def complete_dirs(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories that verify, newest step first."""
    found = []
    if not checkpoint_dir.is_dir():
        return found
    pending, _ = read_pointer(checkpoint_dir, PENDING)
    unproven = pending["dir"] if pending is not None else None
    for path in checkpoint_dir.iterdir():
        if not path.is_dir() or not path.name.startswith("step-") or path.is_symlink() or path.name == unproven:
            continue
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError:
            continue
        found.append((int(manifest["step"]), path))
    found.sort(key=lambda item: (item[0], item[1].stat().st_mtime_ns), reverse=True)
    return found


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint ``last`` names when it verifies, else the newest one that does (``None``: none)."""
    record, _ = read_pointer(checkpoint_dir, "last")
    if record is not None:
        try:
            verify_checkpoint(checkpoint_dir / record["dir"], record)
            return checkpoint_dir / record["dir"]
        except CheckpointError:
            pass
    complete = complete_dirs(checkpoint_dir)
    return complete[0][1] if complete else None


def disk_full_error(path: Path) -> DiskFullError:
    """A :class:`DiskFullError` for ``path`` naming the last complete checkpoint of its run.

    The run directory is the nearest folder above ``path`` with a ``checkpoints/`` folder.
    """
    for folder in list(Path(path).parents)[:4]:
        if (folder / "checkpoints").is_dir():
            return DiskFullError(path, last_complete_checkpoint(folder / "checkpoints"))
    return DiskFullError(path, None)
