"""Image-caption datasets: the synthetic ``shapes`` set and the real formats (SPEC section 7)."""
