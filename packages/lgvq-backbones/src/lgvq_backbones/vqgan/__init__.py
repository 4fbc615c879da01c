"""The `vqgan` backbone (docs/method.md: VQ-GAN)."""
