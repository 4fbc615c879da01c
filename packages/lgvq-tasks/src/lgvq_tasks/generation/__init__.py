"""Generative models trained on a frozen tokenizer's codes (the paper's App. A.1, Tables 5-7 and 10).

``code-gpt`` (:mod:`.code_gpt`): an autoregressive transformer over raster code sequences, for
unconditional generation, completion, semantic image synthesis and text conditioning.
``text-to-image`` (:mod:`.diffusion_model`): a VQ-Diffusion discrete diffusion model over codes,
conditioned on text token states. Both follow the downstream-model contract of
:mod:`lgvq_core.downstream`.
"""
