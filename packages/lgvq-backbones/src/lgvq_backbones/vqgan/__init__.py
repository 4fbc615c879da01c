"""The `vqgan` backbone (SPEC section 4)."""
