"""Spec records of the `cvq` backbone (config classes only: no torch at import)."""

from __future__ import annotations

BACKBONES: list = []
QUANTIZERS: list = []
