"""Reading dataset files: every failure becomes a :class:`DataError` that names the file.

Item files (an image, a caption file) get :data:`SKIP_HINT`, since the run can skip such items;
index files (a JSON, a split list) cannot be skipped and say how to fix the path instead.

Paths *listed in* a data set's index files (a JSONL ``image``, a COCO ``file_name``, a line of
CUB's ``images.txt``, an MM-CelebA-HQ id) must stay inside the folder they are listed for: an
absolute path, or one whose ``..`` climbs out once normalised, is refused (:class:`ListedPaths`),
so that a downloaded index file cannot make a run read ``/etc/...`` or a user's other files. The
test is on the path as written, not on where symlinks lead: a symlink inside the data folder was
put there by whoever owns the folder, and is followed. Paths in the run file (``root``,
``images_dir``, ...) are the user's own choice and may be absolute.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

from PIL import Image

from lgvq_core.errors import DataError

#: What to do about one bad item.
SKIP_HINT = "fix or remove the file, or set train.skip_bad_items = true to skip such items"


def resolve(root: Path, path: str) -> Path:
    """``path`` relative to ``root`` unless absolute (``~`` expanded)."""
    return root / Path(path).expanduser()


class ListedPaths:
    """Joins paths listed in an index file to their folder, refusing those that leave it.

    With ``skip_bad_items`` a refused path becomes a bad item (its message is kept in
    :attr:`refused` and raised when the item is loaded, so it is skipped and reported like a
    missing image); otherwise it is a :class:`DataError` at once, naming the file and line.
    """

    def __init__(self, folder: Path, skip_bad_items: bool) -> None:
        self.folder = folder
        self.skip_bad_items = skip_bad_items
        #: placeholder path -> why it was refused
        self.refused: dict[Path, str] = {}

    def join(self, relative: str, where: str, what: str = "image") -> Path:
        """``folder / relative``; ``where`` names the index file and line for the message."""
        problem = escape_problem(relative)
        if problem is None:
            return self.folder / relative
        message = (
            f"{where}: {what} path {relative!r} {problem}, outside the data folder {self.folder}; listed paths must "
            f"be relative and stay inside it (symlinks inside the folder are followed); {SKIP_HINT}"
        )
        if not self.skip_bad_items:
            raise DataError(message)
        placeholder = self.folder / f"<refused {len(self.refused)}>"
        self.refused[placeholder] = message
        return placeholder


def escape_problem(relative: str) -> str | None:
    """Why ``relative`` would leave its folder (``None`` when it stays inside)."""
    if "\x00" in relative:
        return "holds a NUL byte"
    if os.path.isabs(relative) or relative.startswith("~") or Path(relative).drive:
        return "is absolute"
    normal = os.path.normpath(relative)
    if normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("../"):
        return "climbs out with '..'"
    return None


def require_dir(path: Path, key: str) -> Path:
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}; set data.{key} to an existing folder")
    return path


def require_file(path: Path, key: str) -> Path:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}; set data.{key} to an existing file")
    return path


def open_image_file(path: Path) -> Image.Image:
    """Decode an image fully (so a truncated file fails here) and return it as RGB."""
    if not path.is_file():
        raise DataError(f"image file not found: {path}; {SKIP_HINT}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image file {path}: {exc}; {SKIP_HINT}") from None


def read_caption_file(path: Path) -> list[str]:
    """Captions of a text file, one per line (blank lines dropped)."""
    if not path.is_file():
        raise DataError(f"caption file not found: {path}; {SKIP_HINT}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read caption file {path}: {exc}; {SKIP_HINT}") from None
    return [line for line in text.splitlines() if line.strip()]


def read_json(path: Path, key: str) -> Any:
    require_file(path, key)
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read JSON file {path}: {exc}") from None


def read_lines(path: Path, key: str) -> list[str]:
    """Non-blank lines of an index file, stripped."""
    require_file(path, key)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds only plain containers and scalars: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"it refers to {module}.{name}; only plain data (lists, dicts, tuples, numbers, strings) is accepted"
        )


def read_plain_pickle(path: Path, what: str) -> Any:
    """A pickle of plain data (lists, tuples, dicts, sets, numbers, strings, bytes), read safely.

    Nothing in the file runs: a pickle that refers to any class or function (which is how a pickle
    runs code) is refused with a :class:`DataError` naming the file, before anything is built.
    """
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes()), encoding="utf-8").load()
    except Exception as exc:  # noqa: BLE001 - a malformed pickle fails in many ways; all mean a bad file
        raise DataError(f"cannot read {what} {path}: {exc}") from None


def load_name_list(path: Path, key: str) -> list[str]:
    """A pickled list of names (str or int), read without running any code from the file.

    When ``path`` is absent, ``path`` with the suffix ``.txt`` (one name per line) is read instead.
    """
    if not path.is_file():
        text_path = path.with_suffix(".txt")
        if text_path.is_file():
            return read_lines(text_path, key)
        raise DataError(f"list of image ids not found: {path} (nor {text_path}); set data.{key} to an existing file")
    names = read_plain_pickle(path, "list of image ids")
    if not isinstance(names, (list, tuple)):
        raise DataError(f"{path} holds a {type(names).__name__}, expected a list of image ids")
    result = []
    for position, name in enumerate(names):
        if isinstance(name, bytes):
            name = name.decode("utf-8", errors="replace")
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            raise DataError(f"{path}: entry {position} is a {type(name).__name__}, expected an image id (str or int)")
        result.append(str(name))
    return result
