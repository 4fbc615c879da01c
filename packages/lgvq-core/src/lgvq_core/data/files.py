"""Reading dataset files: every failure becomes a :class:`DataError` that names the file.

Item files (an image, a caption file) get :data:`SKIP_HINT`, since the run can skip such items;
index files (a JSON, a split list) cannot be skipped and say how to fix the path instead.

Paths listed *in* index files are joined through :mod:`lgvq_core.data.inside_root`.
"""

from __future__ import annotations

import io
import json
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
