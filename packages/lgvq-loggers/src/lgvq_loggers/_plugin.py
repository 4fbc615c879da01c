"""lgvq-loggers' components, registered through its ``loggers`` entry point."""

from __future__ import annotations

from lgvq_core.api import hookimpl


@hookimpl
def lgvq_loggers():
    from lgvq_loggers.registration import LOGGERS

    return LOGGERS
