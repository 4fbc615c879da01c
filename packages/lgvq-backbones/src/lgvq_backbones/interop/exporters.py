"""Spec records of the tokenizer exporters (``lgvq export --format NAME``); no torch at import."""

from __future__ import annotations

import attrs

from lgvq_core.api import ComponentSpec, option, positive


@attrs.define
class DiffusersExportConfig:
    """A VQ-GAN as a diffusers ``VQModel`` folder (config.json + diffusion_pytorch_model.safetensors)."""

    verify: bool = option(
        True,
        "Load the written folder with diffusers and compare encode, quantise and decode with lgvq's on a random "
        "batch; the export fails (nothing is written) when they differ by more than tolerance or pick other codes.",
    )
    tolerance: float = option(
        1e-4,
        "Largest absolute difference verify accepts. float32 summation order alone moves a full-size f16 "
        "decoder's output by about 1e-5; a wrong weight moves it by far more.",
        positive,
    )
    scaling_factor: float = option(
        1.0,
        "VQModel.scaling_factor, by which diffusion pipelines multiply the latents; lgvq does not scale them.",
        positive,
    )


EXPORTERS: list = [
    ComponentSpec(
        name="diffusers",
        summary="a vqgan tokenizer as a diffusers VQModel folder, checked numerically against lgvq "
        "(needs lgvq-backbones[diffusers])",
        config_cls=DiffusersExportConfig,
        factory="lgvq_backbones.interop.diffusers_vqmodel:build_diffusers_exporter",
    )
]
