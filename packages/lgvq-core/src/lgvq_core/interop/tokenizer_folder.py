"""The ``folder`` export format: a trained tokenizer that describes itself and loads without its run.

::

    OUT/
      lgvq-tokenizer.json   what the folder is: format version, sizes, weights' SHA-256, provenance,
                            the plugins that provide the backbone and quantizer, evaluation numbers
      model.safetensors     the tokenizer's weights (keys ``tokenizer.*``, as in lgvq checkpoints)
      config.toml           the run's resolved run file, as written: every default filled in
      README.md             model card: what it is, how to load it, evaluation numbers, provenance

:func:`lgvq_core.api.load_tokenizer` recognises the folder by ``lgvq-tokenizer.json`` and builds only
the run file's ``[model.quantizer]`` and ``[model.backbone]`` tables at the recorded image size and
channels: no dataset, text encoder or run directory is needed. A tokenizer whose quantizer reads the
text encoder and the training captions when it is built (VQCT's word prior) is refused: the folder
carries neither. Writing the folder is :mod:`lgvq_core.interop.folder_export`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from lgvq_core.config.loader import parse_toml
from lgvq_core.context import BuildContext
from lgvq_core.errors import CheckpointError, ConfigError, RunDirError, UnknownComponentError
from lgvq_core.registry import get_registry
from lgvq_core.run_file import structure_component
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.text_feature_cache import cache_root

FORMAT = "lgvq-tokenizer"
FORMAT_VERSION = 1
MARKER = "lgvq-tokenizer.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.toml"
CARD = "README.md"
PREFIX = "tokenizer"


def is_tokenizer_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``lgvq export --format folder``."""
    return (Path(path).expanduser() / MARKER).is_file()


# ------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------
@dataclass
class FolderWeights:
    """The folder's weights file as :class:`lgvq_core.runner.load.LoadedTokenizer` reports a checkpoint."""

    path: Path
    sha256: str
    step: int


@dataclass
class FolderTokenizer:
    """A tokenizer read from a folder, with the attributes :class:`lgvq_core.runner.load.LoadedTokenizer`
    reads from a run: the folder stands in for the run directory and for the checkpoint."""

    tokenizer: torch.nn.Module
    run_dir: Path
    checkpoint: FolderWeights
    in_channels: int
    image_size: int | None
    record: dict[str, Any]

    @property
    def step(self) -> int:
        return self.checkpoint.step


def read_marker(folder: Path) -> dict[str, Any]:
    path = folder / MARKER
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); export the tokenizer again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RunDirError(f"{path}: not an lgvq tokenizer folder (format is not {FORMAT!r})")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(
            f"{path}: format_version {version!r} is newer than this lgvq-core reads ({FORMAT_VERSION}); "
            "upgrade lgvq-core"
        )
    for key in ("weights_sha256", "in_channels"):
        if key not in record:
            raise RunDirError(f"{path}: key {key!r} missing; export the tokenizer again")
    return record


def _build(raw: dict[str, Any], record: dict[str, Any], folder: Path, device: str, log: Callable[[str], None]):
    """The run file's quantizer and backbone, built as :func:`lgvq_core.runner.load.build_tokenizer` does."""
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if not isinstance(model.get("backbone"), dict) or not isinstance(model.get("quantizer"), dict):
        raise ConfigError(["$.model: needs [model.backbone] and [model.quantizer]"], source=str(folder / CONFIG))
    seed = raw.get("run", {}).get("seed", 0)
    registry = get_registry()
    context = BuildContext(
        device=device,
        seed=seed,
        image_size=record.get("image_size"),
        in_channels=int(record["in_channels"]),
        cache_dir=str(cache_root() / "components"),
        log=log,
    )
    providers = record.get("provenance", {}).get("providers", {})
    built: dict[str, Any] = {}
    for kind in ("quantizer", "backbone"):
        try:
            component = structure_component(kind, model[kind], f"$.model.{kind}")
        except UnknownComponentError as exc:
            provider = providers.get(kind, {})
            hint = f"; install {provider['distribution']}" if provider.get("distribution") else ""
            raise RunDirError(f"{folder / CONFIG}: {exc}{hint}") from None
        uses_text = getattr(component.config, "uses_text", False)
        if uses_text() if callable(uses_text) else uses_text:
            raise RunDirError(
                f"{folder / CONFIG}: $.model.{kind} ({component.type}) reads the text encoder and the training "
                "captions when it is built; a tokenizer folder cannot rebuild it"
            )
        if kind == "quantizer":
            torch.manual_seed(seed)
        built[kind] = registry.build(kind, component, f"$.model.{kind}", context)
        context.quantizer = built["quantizer"]
    return built["backbone"]


def load_tokenizer_folder(
    folder: str | Path, device: str = "cpu", log: Callable[[str], None] = print
) -> FolderTokenizer:
    """The tokenizer of a folder written by ``lgvq export --format folder``, frozen, in eval mode on ``device``.

    The weights are checked against the SHA-256 the folder records.
    """
    folder = Path(folder).expanduser()
    record = read_marker(folder)
    weights_path = folder / record.get("weights", WEIGHTS)
    try:
        data = weights_path.read_bytes()
        raw = parse_toml((folder / record.get("config", CONFIG)).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunDirError(f"{folder}: incomplete tokenizer folder ({exc})") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != record["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: SHA-256 {sha256} differs from the {record['weights_sha256']} recorded in {MARKER}; "
            "the file was changed or damaged: export the tokenizer again"
        )
    tensors = load_safetensors(data)
    tokenizer = _build(raw, record, folder, str(device), log)
    ckpt.load_module(tokenizer, tensors, PREFIX, weights_path)
    tokenizer = tokenizer.to(device).eval()
    for parameter in tokenizer.parameters():
        parameter.requires_grad_(False)
    read = FolderWeights(path=folder, sha256=sha256, step=int(record.get("step", 0)))
    return FolderTokenizer(
        tokenizer=tokenizer,
        run_dir=folder,
        checkpoint=read,
        in_channels=int(record["in_channels"]),
        image_size=record.get("image_size"),
        record=record,
    )
