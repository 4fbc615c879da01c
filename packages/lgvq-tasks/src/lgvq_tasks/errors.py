"""The error a task raises on purpose (``lgvq eval`` prints its message and exits with 1)."""

from __future__ import annotations

from lgvq_core.api import LgvqError


class TaskError(LgvqError):
    """A task that cannot run on this model or data; the message says which task and what to do."""
