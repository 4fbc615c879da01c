"""The `vqct` backbone: VQ-GAN (taming f16) around the VQCT quantizer (docs/method.md: VQCT).

VQGAN sizes ``quant_conv`` (z_channels -> 512) and ``post_quant_conv`` (512 -> z_channels) from the
quantizer's ``dim``, so the VQCT model is the VQ-GAN module with the two-half GCN codebook.
"""

from __future__ import annotations

from lgvq_backbones.vqct.config import VQCTBackboneConfig
from lgvq_backbones.vqct.quantizer import VQCTQuantizer
from lgvq_backbones.vqgan.model import VQGAN, build_vqgan
from lgvq_core.api import BuildContext, ConfigError


def build_vqct_backbone(config: VQCTBackboneConfig, context: BuildContext) -> VQGAN:
    quantizer = getattr(context, "quantizer", None)
    if quantizer is not None and not isinstance(quantizer, VQCTQuantizer):
        raise ConfigError(
            [
                f'$.model.quantizer.type: backbone "vqct" needs the vqct quantizer, got {type(quantizer).__name__}; '
                'remove [model.quantizer] or set type = "vqct"'
            ]
        )
    return build_vqgan(config, context)
