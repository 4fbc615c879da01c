"""Test doubles registered as components, so runs and CLI tests can use them by name.

``tiny-ae`` (backbone), ``tiny-text`` (text encoder) and ``tiny-prior`` (downstream model) need no weights and run in milliseconds.
Block them with ``LGVQ_DISABLE_PLUGINS=testing``.
"""

from __future__ import annotations

from lgvq_core.plugins import hookimpl
from lgvq_core.specs import BackboneSpec, ComponentSpec, DownstreamSpec
from lgvq_core.testing.config import TinyAutoencoderConfig, TinyPriorConfig, TinyTextConfig


@hookimpl
def lgvq_backbones():
    return [
        BackboneSpec(
            name="tiny-ae",
            summary="test double: two-conv autoencoder (optionally adversarial) for fast CPU tests",
            config_cls=TinyAutoencoderConfig,
            factory="lgvq_core.testing.doubles:build_tiny_autoencoder",
            default_quantizer={"type": "vq", "codebook_size": 64, "dim": 16},
        )
    ]


@hookimpl
def lgvq_text_encoders():
    return [
        ComponentSpec(
            name="tiny-text",
            summary="test double: hashed-word frozen random text encoder (no weights, no downloads)",
            config_cls=TinyTextConfig,
            factory="lgvq_core.testing.doubles:build_tiny_text",
        )
    ]


@hookimpl
def lgvq_downstream_models():
    return [
        DownstreamSpec(
            name="tiny-prior",
            summary="test double: next-code model on cached codes (embedding, dropout, linear)",
            config_cls=TinyPriorConfig,
            factory="lgvq_core.testing.doubles:build_tiny_prior",
            default_train={"betas": [0.9, 0.95], "weight_decay": 0.01},
        )
    ]
