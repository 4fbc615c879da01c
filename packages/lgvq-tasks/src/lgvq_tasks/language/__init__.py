"""Language tasks on frozen codes (paper Section 4, Tables 8, 9, 11): captioning, VQA and grounding.

Each model follows the downstream contract of :mod:`lgvq_core.downstream`: built from its config and a
:class:`~lgvq_core.downstream.FrozenTokenizer`, trained through ``training_loss(batch)``. Every model
sees an image as its *visual tokens*, the frozen codebook vectors of its cached code indices
(:mod:`.visual_tokens`), so that what differs between a baseline and a language-guided tokenizer (the
codebook) is what the task measures.
"""
