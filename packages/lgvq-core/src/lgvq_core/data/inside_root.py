"""Joining a path read from a dataset's index file to the dataset's folder, without leaving it.

Index files (JSONL, COCO JSON, CUB's ``images.txt``, pickled id lists) name images by relative
paths or ids. A name such as ``../../home/user/.ssh/id_rsa`` or an absolute path would make a
dataset read files outside its folder; such names are refused with a :class:`DataError` naming
the file and the entry (line) that gave them.

The rule is on the path as written, normalised (``a/../b.jpg`` is ``b.jpg``), not on where
symlinks lead: a symlink inside the folder was put there by whoever owns the folder, and is
followed. Paths in the run file (``root``, ``images_dir``, ...) are the user's own choice and may
be absolute.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from lgvq_core.data.files import SKIP_HINT
from lgvq_core.errors import DataError


def escape_problem(name: str) -> str | None:
    """Why ``name`` would leave its folder (``None`` when it stays inside)."""
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL byte"
    if os.path.isabs(name) or name.startswith("~") or PurePath(name).drive:
        return "is absolute"
    normal = os.path.normpath(name)
    if normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("../"):
        return "climbs out with '..'"
    return None


def _message(folder: Path, name: str, where: str, what: str, problem: str) -> str:
    return (
        f"{where}: the {what} {name!r} leaves the dataset folder {folder} ({problem}); index files must name "
        "files by paths relative to the folder that stay inside it (symlinks inside the folder are followed)"
    )


def join_inside(folder: Path, name: str, where: str, what: str = "path") -> Path:
    """``folder / name``, refused when ``name`` is absolute or leads outside ``folder``.

    ``where`` says which entry of which file gave ``name`` (for the message).
    """
    problem = escape_problem(name)
    if problem is not None:
        raise DataError(_message(folder, name, where, what, problem))
    return folder / name


class ListedPaths:
    """:func:`join_inside` for a dataset's items, where a refused path can be a skippable bad item.

    With ``skip_bad_items`` a refused path becomes a placeholder whose message is kept in
    :attr:`refused` (and raised when the item is loaded, so it is skipped and reported like a
    missing image); otherwise it is a :class:`DataError` at once.
    """

    def __init__(self, folder: Path, skip_bad_items: bool) -> None:
        self.folder = folder
        self.skip_bad_items = skip_bad_items
        #: placeholder path -> why it was refused
        self.refused: dict[Path, str] = {}

    def join(self, name: str, where: str, what: str = "image path") -> Path:
        problem = escape_problem(name)
        if problem is None:
            return self.folder / name
        message = f"{_message(self.folder, name, where, what, problem)}; {SKIP_HINT}"
        if not self.skip_bad_items:
            raise DataError(message)
        placeholder = self.folder / f"<refused {len(self.refused)}>"
        self.refused[placeholder] = message
        return placeholder
