"""Built-in quantizers (``vq``, ``vq-ema``, ``cosine``) and the quantizer contract."""
