"""Spec records of the `vqvae` backbone (config classes only: no torch at import)."""

from __future__ import annotations

BACKBONES: list = []
QUANTIZERS: list = []
