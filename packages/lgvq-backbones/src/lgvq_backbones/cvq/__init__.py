"""The `cvq` backbone (SPEC section 4)."""
