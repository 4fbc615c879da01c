"""lgvq-core's own components, registered through its ``core`` entry point like any plugin's."""

from __future__ import annotations

from lgvq_core.alignment.registration import ALIGNMENT_LOSSES
from lgvq_core.callbacks.registration import CALLBACKS
from lgvq_core.data.registration import DATASETS
from lgvq_core.interop.exporters import EXPORTERS
from lgvq_core.plugins import hookimpl
from lgvq_core.quantizers.registration import QUANTIZERS


@hookimpl
def lgvq_quantizers():

    return QUANTIZERS


@hookimpl
def lgvq_alignment_losses():

    return ALIGNMENT_LOSSES


@hookimpl
def lgvq_datasets():

    return DATASETS


@hookimpl
def lgvq_callbacks():

    return CALLBACKS


@hookimpl
def lgvq_exporters():

    return EXPORTERS
