"""Exceptions lgvq raises on purpose. Each message says what is wrong and what to do."""

from __future__ import annotations


class LgvqError(Exception):
    """Base class of every error lgvq raises on purpose."""


class PluginLoadError(LgvqError):
    """A plugin failed to load while ``LGVQ_STRICT_PLUGINS=1``."""


class UnknownComponentError(LgvqError, KeyError):
    """A component name that no loaded plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(LgvqError):
    """Two plugins provide a component with the same kind and name."""


class ConfigError(LgvqError):
    """A run file with problems. ``problems`` holds one ``"$.path: message"`` line per problem."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        count = len(self.problems)
        header = f"{where}{count} problem{'s' if count != 1 else ''} in the run file"
        super().__init__(header + "\n" + "\n".join(self.problems))


class RunDirError(LgvqError):
    """A run directory that cannot be created, resumed or read."""


class CheckpointError(LgvqError):
    """A checkpoint that is missing, incomplete or does not match the model."""


class NonFiniteLossError(LgvqError):
    """A loss term became NaN or infinite; ``step`` and ``term`` say where."""

    def __init__(self, step: int, term: str, value: float) -> None:
        self.step = step
        self.term = term
        self.value = value
        super().__init__(
            f"loss term {term!r} is {value} at step {step}; training stopped. "
            "The last good checkpoint was kept. Lower the learning rate, enable gradient "
            'clipping (train.grad_clip) or use precision = "fp32".'
        )


class DataError(LgvqError):
    """An image or caption file that is missing or unreadable; the message names the file."""


class DiskFullError(LgvqError, OSError):
    """No space left while writing ``path``; nothing half-written is left for a reader.

    ``checkpoint`` is the last complete checkpoint (``None`` when the run has none yet), named in
    the message so that the user knows what survived.
    """

    def __init__(self, path, checkpoint=None) -> None:
        self.path = path
        self.checkpoint = checkpoint
        super().__init__(self._message())

    def _message(self) -> str:
        if self.checkpoint is None:
            return (
                f"no space left on device while writing {self.path}; the last complete checkpoint is none "
                "(the run saved no checkpoint yet). Free some space and start the run again"
            )
        from pathlib import Path

        run_dir = Path(self.checkpoint).parent.parent
        return (
            f"no space left on device while writing {self.path}; the last complete checkpoint is "
            f"{self.checkpoint}. Free some space, then continue with `lgvq run --resume {run_dir}`"
        )

    def __str__(self) -> str:
        return self._message()
