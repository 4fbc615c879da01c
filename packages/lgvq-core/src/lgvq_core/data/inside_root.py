"""Joining a path read from a dataset's index file to the dataset's folder, without leaving it.

Index files (JSON, pickles, id lists) name images by relative paths or ids. A name such as
``../../home/user/.ssh/id_rsa`` or an absolute path would make a dataset read files outside its
folder; :func:`join_inside` refuses those with a :class:`DataError` that names the entry.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from lgvq_core.errors import DataError


def join_inside(folder: Path, name: str, where: str) -> Path:
    """``folder / name``, refused when ``name`` is absolute or leads outside ``folder``.

    ``where`` says which entry of which file gave ``name`` (for the message). Symbolic links inside
    the folder are followed as they are: a data set may link its image folder elsewhere.
    """
    relative = PurePath(name)
    if not name or relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise DataError(
            f"{where}: the path {name!r} leaves the dataset folder {folder}; "
            "index files must name files by paths relative to the folder, without '..'"
        )
    return folder / relative
