"""lgvq-text-encoders' components, registered through its ``text-encoders`` entry point."""

from __future__ import annotations

from lgvq_core.api import hookimpl


@hookimpl
def lgvq_text_encoders():
    from lgvq_text_encoders.registration import TEXT_ENCODERS

    return TEXT_ENCODERS
