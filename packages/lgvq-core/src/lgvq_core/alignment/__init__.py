"""The LG-VQ alignment losses: code ViT, semantic-nce, masked-text, relation (SPEC section 2)."""
