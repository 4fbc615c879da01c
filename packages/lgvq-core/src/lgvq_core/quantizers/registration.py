"""Spec records of lgvq-core's built-in quantizers (config classes only: no torch at import)."""

from __future__ import annotations

QUANTIZERS: list = []
