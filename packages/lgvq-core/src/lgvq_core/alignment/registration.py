"""Spec records of lgvq-core's built-in alignment (config classes only: no torch at import)."""

from __future__ import annotations

ALIGNMENT_LOSSES: list = []
