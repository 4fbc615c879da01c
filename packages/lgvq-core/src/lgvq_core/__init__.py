"""lgvq-core: language-guided codebook learning (LG-VQ) as a plugin ecosystem.

Importing this package does not import torch: the plugin system, registry, run-file
validation and most of the CLI work without it.
"""

from lgvq_core.config.fields import option
from lgvq_core.plugins import hookimpl
from lgvq_core.specs import BackboneSpec, ComponentSpec

__version__ = "0.1.0"

__all__ = ["BackboneSpec", "ComponentSpec", "__version__", "hookimpl", "option"]
