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
    """A loss term (or a parameter) became NaN or infinite; ``step`` and ``term`` say where.

    The training loop fills in :attr:`kept` (what survives) before the error reaches the user:
    a checkpoint is only ever written from weights shown good, so the one named is safe to resume.
    """

    def __init__(self, step: int, term: str, value: float, what: str = "loss term") -> None:
        self.step = step
        self.term = term
        self.value = value
        #: "loss term", "validation loss term" or "parameter"
        self.what = what
        #: what the run kept: set by :meth:`keeping`
        self.kept = "Checkpoints are only written from weights whose loss was finite."
        super().__init__(step, term, value)

    def keeping(self, checkpoint, checkpoint_step: int | None = None) -> NonFiniteLossError:
        """Name the last good checkpoint (``None``: the run has none yet); returns ``self``."""
        if checkpoint is None:
            self.kept = "No checkpoint was written before this step, so there is nothing to resume from."
        else:
            at = f" (step {checkpoint_step})" if checkpoint_step is not None else ""
            self.kept = (
                f"The last good checkpoint is {checkpoint}{at}; "
                f"continue from it with `lgvq run --resume {_run_dir_of(checkpoint)}`."
            )
        return self

    def __str__(self) -> str:
        return (
            f"{self.what} {self.term!r} is {self.value} at step {self.step}; training stopped. {self.kept} "
            "Lower the learning "
            'rate, enable gradient clipping (train.grad_clip) or use precision = "fp32".'
        )


def _run_dir_of(checkpoint) -> str:
    from pathlib import Path

    return str(Path(checkpoint).parent.parent)


class DataError(LgvqError):
    """An image or caption file that is missing or unreadable; the message names the file."""


class ExportError(LgvqError):
    """A tokenizer that cannot be written in the asked format (``lgvq export``), or a missing optional
    dependency of that format; the message says what the format lacks or what to install."""


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
