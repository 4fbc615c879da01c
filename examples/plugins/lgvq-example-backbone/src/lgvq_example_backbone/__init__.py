"""An example lgvq plugin: the ``example-conv`` tokenizer backbone."""

__version__ = "0.1.0"
