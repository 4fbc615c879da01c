"""The field's checkpoints in and lgvq's tokenizers out, for the backbones of this package."""
