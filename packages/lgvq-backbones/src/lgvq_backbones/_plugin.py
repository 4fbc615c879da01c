"""lgvq-backbones' components, registered through its ``backbones`` entry point."""

from __future__ import annotations

from lgvq_core.api import hookimpl


@hookimpl
def lgvq_backbones():
    from lgvq_backbones.registration import BACKBONES

    return BACKBONES


@hookimpl
def lgvq_quantizers():
    from lgvq_backbones.registration import QUANTIZERS

    return QUANTIZERS


@hookimpl
def lgvq_importers():
    from lgvq_backbones.interop.importers import IMPORTERS

    return IMPORTERS


@hookimpl
def lgvq_exporters():
    from lgvq_backbones.interop.exporters import EXPORTERS

    return EXPORTERS
