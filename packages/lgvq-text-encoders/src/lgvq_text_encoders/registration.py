"""Spec records of lgvq-text-encoders (config classes only: no torch at import)."""

from __future__ import annotations

TEXT_ENCODERS: list = []
