"""Spec records of lgvq-backbones, gathered from each backbone's own registration module."""

from __future__ import annotations

from lgvq_backbones.cvq import registration as _cvq
from lgvq_backbones.vqct import registration as _vqct
from lgvq_backbones.vqgan import registration as _vqgan
from lgvq_backbones.vqvae import registration as _vqvae

_MODULES = (_vqvae, _vqgan, _cvq, _vqct)

BACKBONES = [spec for module in _MODULES for spec in module.BACKBONES]
QUANTIZERS = [spec for module in _MODULES for spec in module.QUANTIZERS]
