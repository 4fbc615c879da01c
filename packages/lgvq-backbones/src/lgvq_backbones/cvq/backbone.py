"""The `cvq` backbone: VQ-GAN (taming f16) around the CVQ quantizer, as LG-VQ's ``LG_cvq`` (docs/method.md: CVQ)."""

from __future__ import annotations

from lgvq_backbones.cvq.config import CVQBackboneConfig
from lgvq_backbones.cvq.quantizer import CVQQuantizer
from lgvq_backbones.vqgan.model import VQGAN, build_vqgan
from lgvq_core.api import BuildContext


def build_cvq_backbone(config: CVQBackboneConfig, context: BuildContext) -> VQGAN:
    """VQ-GAN with ``context.quantizer``; says so in the log when that is not a CVQ quantizer."""
    quantizer = getattr(context, "quantizer", None)
    if quantizer is not None and not isinstance(quantizer, CVQQuantizer):
        context.log(
            f"cvq: the quantizer is {type(quantizer).__name__}, not CVQ; this model is a plain VQ-GAN with that quantizer"
        )
    return build_vqgan(config, context)
