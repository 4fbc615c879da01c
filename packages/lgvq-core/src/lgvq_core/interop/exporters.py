"""Spec records of lgvq-core's own tokenizer exporters (``lgvq export --format NAME``); no torch at import."""

from __future__ import annotations

import attrs

from lgvq_core.config.fields import option
from lgvq_core.specs import ComponentSpec


@attrs.define
class FolderExportConfig:
    """A self-describing tokenizer folder that :func:`lgvq_core.api.load_tokenizer` reads."""

    title: str | None = option(None, "Title of the model card (README.md); default: the run's name.")


EXPORTERS: list = [
    ComponentSpec(
        name="folder",
        summary="any tokenizer as a folder: weights (safetensors), the resolved run file, a model card with the "
        "run's evaluation numbers and provenance; load_tokenizer(folder) reads it",
        config_cls=FolderExportConfig,
        factory="lgvq_core.interop.folder_export:build_folder_exporter",
    )
]
