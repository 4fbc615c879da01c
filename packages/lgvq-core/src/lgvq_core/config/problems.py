"""One problem of a run file, as every config class's cross-checks report it (no torch)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Problem:
    """One problem of a run file. ``warning`` problems are reported but do not fail a check."""

    path: str
    message: str
    warning: bool = False
    #: ``(dataset type, annotation kind)`` when the problem is a missing annotation: the run-file check,
    #: which holds the registry, adds which registered datasets have it.
    annotation: tuple[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.path}: {'warning: ' if self.warning else ''}{self.message}"
