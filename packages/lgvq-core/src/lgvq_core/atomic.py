"""Writes a crash cannot leave half done: temporary file in the same folder, fsync, rename.

Every file lgvq saves (checkpoint pointers, run files, text-cache shards, word priors, eval
results) goes through here, so a reader sees either the old content or the new, never a mix. A
full disk is reported once, as :class:`lgvq_core.errors.DiskFullError` naming the file and the
last complete checkpoint, and leaves no temporary behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lgvq_core.checkpoint_files import disk_full_error


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (threads may be writing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (creating its folder if needed).

    The file gets the permissions of any file the user creates (0666 less the umask), not the
    0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise
    fsync_dir(path.parent)


def is_disk_full(exc: BaseException) -> bool:
    """``ENOSPC`` or ``EDQUOT``: the disk or the user's quota is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str | Path) -> Exception:
    """The one clear error for a full disk, naming ``path`` and the last complete checkpoint of its run."""
    return disk_full_error(Path(path))


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False))
