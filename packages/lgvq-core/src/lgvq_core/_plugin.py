"""lgvq-core's own components, registered through its ``core`` entry point like any plugin's."""

from __future__ import annotations

from lgvq_core.plugins import hookimpl


@hookimpl
def lgvq_quantizers():
    from lgvq_core.quantizers.registration import QUANTIZERS

    return QUANTIZERS


@hookimpl
def lgvq_alignment_losses():
    from lgvq_core.alignment.registration import ALIGNMENT_LOSSES

    return ALIGNMENT_LOSSES


@hookimpl
def lgvq_datasets():
    from lgvq_core.data.registration import DATASETS

    return DATASETS


@hookimpl
def lgvq_callbacks():
    from lgvq_core.callbacks.registration import CALLBACKS

    return CALLBACKS
