"""lgvq-tasks' components, registered through its ``tasks`` entry point."""

from __future__ import annotations

from lgvq_core.api import hookimpl


@hookimpl
def lgvq_tasks():
    from lgvq_tasks.registration import TASKS

    return TASKS


@hookimpl
def lgvq_downstream_models():
    from lgvq_tasks.registration import DOWNSTREAM

    return DOWNSTREAM
