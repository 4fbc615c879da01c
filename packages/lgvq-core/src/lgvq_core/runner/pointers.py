"""The pointer protocol: moving ``last``, ``best``, ``previous`` and ``pending`` between checkpoint
directories so that a crash between any two filesystem operations leaves every pointer naming a
complete directory.

Pointers are replaced atomically, ``previous`` (the checkpoint ``last`` named before) first.
Directories no pointer names are removed only after the pointers are written. The training loop
writes a periodic checkpoint as ``pending`` and moves ``last`` to it (:func:`promote_pending`) only
once a finite loss has been computed from its weights (the next step's); a NaN discards it
(:func:`discard_pending`). A pending checkpoint is never a fallback.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lgvq_core import checkpoint_files as files
from lgvq_core.atomic import is_disk_full, write_json_atomic
from lgvq_core.errors import DiskFullError


def keep_previous(checkpoint_dir: Path, new_name: str) -> None:
    """Point ``previous`` at what ``last`` names now, before ``last`` moves on."""
    try:
        old = json.loads((checkpoint_dir / "last.json").read_text())
    except (OSError, ValueError):
        return
    if (
        not isinstance(old, dict)
        or old.get("dir") == new_name
        or files.pointer_problem(checkpoint_dir, old) is not None
    ):
        return
    write_json_atomic(checkpoint_dir / "previous.json", old)


def promote_pending(checkpoint_dir: Path, pointers: tuple[str, ...] = ("last",)) -> Path | None:
    """Point ``pointers`` at the pending checkpoint (its weights are now shown good); returns it.

    ``last`` moves only now, so the previous good checkpoint is kept until this one is proven.
    """
    return share_pointer(checkpoint_dir, files.PENDING, pointers, release=True)


def share_pointer(checkpoint_dir: Path, source: str, pointers: tuple[str, ...], release: bool = False) -> Path | None:
    """Point ``pointers`` at the checkpoint ``source`` names (one folder, no second copy); returns it.

    ``release``: remove the ``source`` pointer once the others name its checkpoint (``pending``).
    """
    record, _ = files.read_pointer(checkpoint_dir, source)
    if record is None:
        return None
    try:
        for pointer in pointers:
            if pointer == "last":
                keep_previous(checkpoint_dir, record["dir"])
            write_json_atomic(checkpoint_dir / f"{pointer}.json", record)
        if release:
            (checkpoint_dir / f"{source}.json").unlink(missing_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(checkpoint_dir / "last.json", files.last_complete_checkpoint(checkpoint_dir)) from None
        raise
    prune_checkpoints(checkpoint_dir)
    return checkpoint_dir / record["dir"]


def discard_pending(checkpoint_dir: Path) -> None:
    """Drop the pending checkpoint: its weights produced a non-finite loss (or were never checked)."""
    if (checkpoint_dir / f"{files.PENDING}.json").exists():
        (checkpoint_dir / f"{files.PENDING}.json").unlink()
        prune_checkpoints(checkpoint_dir)


def recover_checkpoints(checkpoint_dir: Path) -> None:
    """Move back a ``.step-N.<id>.old`` copy whose pointer names a missing ``step-N``.

    Checkpoints written by lgvq before format 2 replaced a same-step directory through an
    ``.old`` rename; a crash between the two renames left the only copy there.
    """
    if not checkpoint_dir.is_dir():
        return
    for name in files.referenced_dirs(checkpoint_dir):
        if (checkpoint_dir / name).exists() or "/" in name or name.startswith("."):
            continue
        for stale in sorted(checkpoint_dir.glob(f".{name}.*.old")):
            if (stale / files.MODEL_FILE).exists() and (stale / files.STATE_FILE).exists():
                os.replace(stale, checkpoint_dir / name)
                break


def prune_checkpoints(checkpoint_dir: Path) -> None:
    """Remove checkpoint directories no pointer refers to (and stale temporaries)."""
    recover_checkpoints(checkpoint_dir)
    keep = files.referenced_dirs(checkpoint_dir)
    for path in checkpoint_dir.iterdir():
        if path.is_dir() and path.name not in keep and (path.name.startswith("step-") or path.name.startswith(".")):
            shutil.rmtree(path, ignore_errors=True)
