"""Spec records of lgvq-tasks (config classes only: no torch at import)."""

from __future__ import annotations

TASKS: list = []
