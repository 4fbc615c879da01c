"""Spec records of lgvq-core's built-in data (config classes only: no torch at import)."""

from __future__ import annotations

DATASETS: list = []
