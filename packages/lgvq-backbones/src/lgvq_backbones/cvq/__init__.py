"""The `cvq` quantizer and backbone (SPEC 4.4): VQ-GAN whose unused codes are re-anchored on features.

``config`` (no torch), ``quantizer`` (CVQQuantizer), ``backbone`` (VQ-GAN around it), ``registration``.
"""
