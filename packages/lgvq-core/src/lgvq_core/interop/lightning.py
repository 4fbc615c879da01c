"""Read a PyTorch Lightning checkpoint (``.ckpt``) without running any code from it.

A Lightning checkpoint is a pickle. Besides tensors and plain containers, the ones taming-transformers
and the official LG-VQ code write name a few classes: Lightning 1.x keys the ``callbacks`` entry by the
callback *class* (``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``, taming's
``main.SetupCallback``, ...), ``hyper_parameters`` may be an ``AttributeDict`` or hold an
``argparse.Namespace``, a DictConfig of OmegaConf, or numpy scalars.

The file is loaded with ``torch.load(weights_only=True)``, PyTorch's unpickler that builds tensors and
plain containers only. Each class name of :data:`ALLOWED` (and nothing else) is answered with a
*stand-in* defined here: an inert class that stores what it is given and runs nothing. The real
Lightning, OmegaConf or numpy class is never imported or called, so a file that names anything else --
``os.system``, ``builtins.eval``, any ``__reduce__`` payload -- is refused before a single object is
built, with the names it asked for.
"""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lgvq_core.errors import CheckpointError
from lgvq_core.safe_load import describe_load_error


class Namespace:
    """Stand-in for ``argparse.Namespace``: its attributes become :attr:`values`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.values: dict[str, Any] = dict(kwargs)

    def __setstate__(self, state: Any) -> None:
        self.values = dict(state) if isinstance(state, dict) else {}


class Opaque:
    """Stand-in for an object whose content lgvq does not read (a callback class, an OmegaConf node,
    a numpy scalar): it accepts its arguments and state and keeps only the class name."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.qualified_name}, not read>"


def _opaque(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Opaque,), {"qualified_name": name, "__module__": __name__})


#: Class names a Lightning checkpoint of taming / official LG-VQ may hold -> what reads them.
#: Lightning's ``AttributeDict`` (a dict with attribute access) is read as an ``OrderedDict``.
ALLOWED: dict[str, type] = {
    "pytorch_lightning.utilities.parsing.AttributeDict": OrderedDict,
    "lightning_fabric.utilities.data.AttributeDict": OrderedDict,
    "lightning.fabric.utilities.data.AttributeDict": OrderedDict,
    "argparse.Namespace": Namespace,
}
_OPAQUE = [
    # Lightning 1.x keys ``callbacks`` by the callback class
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.progress.ProgressBar",
    # taming-transformers' main.py and the official LG-VQ's taming/callback.py
    "main.SetupCallback",
    "main.ImageLogger",
    "main.CUDACallback",
    "taming.callback.SetupCallback",
    "taming.callback.ImageLogger",
    "taming.callback.ImageTextLogger",
    # hyper_parameters saved from OmegaConf configs (read from --config instead)
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "typing.Any",
    "collections.defaultdict",
    # types that OmegaConf metadata names (object_type, key_type, element_type): references, not data
    "builtins.dict",
    "builtins.list",
    "builtins.int",
    "builtins.str",
    "builtins.float",
    "builtins.bool",
    # numpy scalars in callback state (e.g. a best score)
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
]
ALLOWED.update({name: _opaque(name) for name in _OPAQUE})


def _refused_globals(path: Path) -> list[str]:
    """The class and function names the file asks for that :data:`ALLOWED` does not answer."""
    import torch  # lazy: lgvq-core's listing commands stay torch-free

    if not zipfile.is_zipfile(path):
        return []  # a legacy (pre-1.6) file: torch's unpickler alone refuses what it does not know
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - an unreadable file: torch.load below says why
        return []
    return sorted(name for name in names if name not in ALLOWED)


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict (``state_dict``, ``hyper_parameters``, ``global_step``, ...) with
    stand-ins turned into plain data (:func:`plain_data`). Raises :class:`CheckpointError` naming the file."""
    import torch  # lazy: lgvq-core's listing commands stay torch-free

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    refused = _refused_globals(path)
    if refused:
        raise CheckpointError(
            f"{path}: refused: the file names {', '.join(refused[:8])}{', ...' if len(refused) > 8 else ''}, "
            "which is neither a tensor, a plain container nor a Lightning/taming entry lgvq reads; loading "
            "it could run code, so lgvq does not. Do not load this file with weights_only=False; re-save "
            "its state_dict from a trusted environment (torch.save({'state_dict': model.state_dict()}, ...))"
        )
    try:
        with torch.serialization.safe_globals([(cls, name) for name, cls in ALLOWED.items()]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - refused or corrupt files of any kind
        raise CheckpointError(f"{path}: not readable as a checkpoint ({describe_load_error(exc)})") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a checkpoint dict with a state_dict")
    return {str(key) if not isinstance(key, type) else key.__name__: value for key, value in data.items()}


def plain_data(value: Any) -> Any:
    """``value`` with stand-ins replaced: mappings -> dict, Namespace -> dict, anything opaque -> the
    :class:`Opaque` instance (callers treat it as unreadable)."""
    if isinstance(value, Namespace):
        return {k: plain_data(v) for k, v in value.values.items()}
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value] if isinstance(value, list) else tuple(plain_data(v) for v in value)
    return value


def has_unread(value: Any) -> bool:
    """Whether ``value`` (after :func:`plain_data`) holds anything that was not read (an OmegaConf node, ...)."""
    if isinstance(value, Opaque) or isinstance(value, type) and issubclass(value, Opaque):
        return True
    if isinstance(value, Mapping):
        return any(has_unread(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_unread(v) for v in value)
    return False
