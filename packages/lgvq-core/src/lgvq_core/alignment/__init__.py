"""The LG-VQ alignment losses: code ViT, semantic-nce, masked-text, relation.

Paper Sec. 3.2; docs/method.md: Code ViT and the three loss sections after it.
"""
