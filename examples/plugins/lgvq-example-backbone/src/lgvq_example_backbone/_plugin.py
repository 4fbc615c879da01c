"""The plugin module named by the entry point: registration hooks only, no torch."""

from __future__ import annotations

from lgvq_core.api import BackboneSpec, hookimpl
from lgvq_example_backbone.config import ExampleConvConfig


@hookimpl
def lgvq_backbones():
    return [
        BackboneSpec(
            name="example-conv",
            summary="small convolutional autoencoder: stride-2 conv stages down, transposed convs up",
            config_cls=ExampleConvConfig,
            factory="lgvq_example_backbone.model:build_example_conv",
            default_quantizer={"type": "vq", "codebook_size": 512, "dim": 64},
        )
    ]
