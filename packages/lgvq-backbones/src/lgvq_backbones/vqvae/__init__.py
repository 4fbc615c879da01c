"""The `vqvae` backbone (docs/method.md: VQ-VAE)."""
