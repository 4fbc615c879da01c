"""Spec records of the checkpoint importers (``lgvq import NAME``); no torch at import.

``taming``: a taming-transformers VQ-GAN (``taming.models.vqgan.VQModel``). ``lg-vq``: an official
LG-VQ checkpoint (``taming.models.LG_vqgan.VQModel`` or ``LG_cvq.VQModel``). Both are PyTorch
Lightning checkpoints; the key and config mapping is in :mod:`lgvq_backbones.interop.taming_checkpoint`.
"""

from __future__ import annotations

import attrs

from lgvq_core.api import ComponentSpec, option


def _name(instance, attribute, value: str) -> None:
    if not value or not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError(f"must be a name of letters, digits, '.', '_' or '-', got {value!r}")


@attrs.define
class TamingImportConfig:
    """Options of ``lgvq import taming|lg-vq CHECKPOINT OUT_RUN_DIR`` (``--config``, ``--set key=value``)."""

    config: str | None = option(
        None,
        "The model config (YAML) the checkpoint was trained with (taming's configs/*.yaml, the official "
        "configs_text/*.yaml). Unset: the checkpoint's own hyper_parameters, when it has them.",
    )
    discriminator: bool = option(
        True, "Take the PatchGAN discriminator (loss.discriminator.*) too; false leaves it out of the run."
    )
    name: str = option("imported", "run.name of the imported run (the run file's [run] name).", _name)


IMPORTERS: list = [
    ComponentSpec(
        name="taming",
        summary="taming-transformers VQ-GAN (VQModel, e.g. the f16 configs) -> a vqgan run",
        config_cls=TamingImportConfig,
        factory="lgvq_backbones.interop.taming_checkpoint:build_taming_importer",
    ),
    ComponentSpec(
        name="lg-vq",
        summary="official LG-VQ checkpoint (LG_vqgan -> vqgan, LG_cvq -> cvq); CLIP and its alignment heads left out",
        config_cls=TamingImportConfig,
        factory="lgvq_backbones.interop.taming_checkpoint:build_lgvq_importer",
    ),
]
