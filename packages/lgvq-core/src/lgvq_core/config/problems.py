"""One problem of a run file, as every config class's cross-checks report it (no torch)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Problem:
    """One problem of a run file. ``warning`` problems are reported but do not fail a check."""

    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {'warning: ' if self.warning else ''}{self.message}"
