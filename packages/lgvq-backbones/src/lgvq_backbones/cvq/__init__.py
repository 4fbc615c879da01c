"""The `cvq` quantizer and backbone (docs/method.md: CVQ): VQ-GAN whose unused codes are re-anchored on features.

``config`` (no torch), ``quantizer`` (CVQQuantizer), ``backbone`` (VQ-GAN around it), ``registration``.
"""
