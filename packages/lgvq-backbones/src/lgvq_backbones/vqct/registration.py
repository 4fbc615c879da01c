"""Spec records of the `vqct` backbone (config classes only: no torch at import)."""

from __future__ import annotations

BACKBONES: list = []
QUANTIZERS: list = []
