"""The `vqvae` backbone (SPEC section 4)."""
