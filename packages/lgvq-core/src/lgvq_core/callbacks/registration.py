"""Spec records of lgvq-core's built-in callbacks (config classes only: no torch at import)."""

from __future__ import annotations

CALLBACKS: list = []
