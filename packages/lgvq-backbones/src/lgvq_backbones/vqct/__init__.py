"""The `vqct` backbone (SPEC section 4)."""
