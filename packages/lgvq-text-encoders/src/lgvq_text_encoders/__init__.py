"""lgvq-text-encoders: see the package README. Importing this package does not import torch."""

__version__ = "0.1.0"
