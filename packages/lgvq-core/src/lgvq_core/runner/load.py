"""A trained run from disk: its run file, one verified checkpoint, and only the parts asked for.

The checkpoint is resolved once (``last``/``best`` pointers, falling back to the newest checkpoint
that verifies) and read once, its bytes checked against the manifest. :func:`build_tokenizer`
builds the tokenizer alone: no datasets, text encoder, alignment heads or discriminator, unless
the tokenizer itself needs them (a quantizer whose config says ``uses_text``, such as VQCT's word
prior). Its image size and channel count come from ``tokenizer-build.json``, which a tokenizer run
writes when it starts; a run from before that file is sized from its validation split.

Downstream runs freeze their tokenizers through :func:`load_tokenizer_run`; :func:`load_tokenizer`
(public as :func:`lgvq_core.api.load_tokenizer`) wraps it in a :class:`LoadedTokenizer`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgvq_core import checkpoint_files
from lgvq_core.atomic import write_json_atomic
from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.config.schema import DownstreamRunFile
from lgvq_core.context import BuildContext
from lgvq_core.errors import CheckpointError, RunDirError
from lgvq_core.interop import tokenizer_folder
from lgvq_core.registry import get_registry
from lgvq_core.run_file import load_run_file
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.text_feature_cache import TextFeatureCache, cache_root

#: What a tokenizer run records of its data for rebuilding the tokenizer without it.
BUILD_FILE = "tokenizer-build.json"


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


@dataclass
class CheckpointRead:
    """One checkpoint directory, read and verified once: weights, training state and the model file's
    SHA-256 (from the manifest the bytes were checked against)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    sha256: str

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    def weights(self, prefix: str) -> dict[str, torch.Tensor]:
        """The weights and extra states saved under ``prefix.`` (e.g. ``"downstream"``), prefix dropped."""
        extra = self.state.get("extra_states", {})
        return {**ckpt.split_tensors(self.tensors, prefix), **ckpt.split_tensors(extra, prefix)}


def read_checkpoint(run_dir: str | Path, which: str = "best", log: Callable[[str], None] = _stderr) -> CheckpointRead:
    """Resolve ``which`` (``best``, ``last`` or a checkpoint directory) in ``run_dir`` and read it, verified."""
    path = ckpt.resolve_checkpoint(Path(run_dir), which, log)
    tensors, state = ckpt.load_checkpoint(path, map_location="cpu")
    sha256 = str(checkpoint_files.read_manifest(path)["files"][checkpoint_files.MODEL_FILE]["sha256"])
    return CheckpointRead(path=path, tensors=tensors, state=state, sha256=sha256)


def read_run_file(run_dir: str | Path, overrides: list[str] | None = None) -> LoadedRunFile:
    """The run file a run trained with (its ``resolved.toml``), validated, with ``overrides``."""
    run_dir = Path(run_dir)
    resolved = run_dir / "resolved.toml"
    if not resolved.exists():
        raise RunDirError(f"{run_dir}: not a run directory (no resolved.toml)")
    return load_run_file(resolved, overrides=list(overrides or []), of_run_dir=True)


def write_build_record(run_dir: Path, image_size: int | None, in_channels: int) -> None:
    """Record the data sizes the tokenizer was built for (see the module docstring)."""
    write_json_atomic(Path(run_dir) / BUILD_FILE, {"image_size": image_size, "in_channels": int(in_channels)})


def read_build_record(run_dir: Path | None) -> dict[str, Any] | None:
    """The run's ``tokenizer-build.json``, or ``None`` when it has none (or it is unreadable)."""
    if run_dir is None:
        return None
    try:
        record = json.loads((Path(run_dir) / BUILD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("in_channels"), int):
        return None
    return record


def uses_text_at_build(config: Any) -> bool:
    """Whether the run's quantizer or backbone reads the text encoder and the captions when it is built."""
    for component in (config.model.quantizer, config.model.backbone):
        uses = getattr(getattr(component, "config", None), "uses_text", False) if component is not None else False
        if uses() if callable(uses) else uses:
            return True
    return False


def _base(config: Any, device: torch.device | str, log: Callable[[str], None]) -> dict[str, Any]:
    return dict(device=str(device), seed=config.run.seed, log=log, skip_bad_items=config.train.skip_bad_items)


def build_text_encoder(config: Any, device: torch.device | str, log: Callable[[str], None]):
    """The run's frozen text encoder and its feature cache on ``device`` (``(None, None)`` without one)."""
    if config.text_encoder is None:
        return None, None

    registry = get_registry()
    encoder = registry.build(
        "text_encoder", config.text_encoder, "$.text_encoder", BuildContext(**_base(config, device, log))
    )
    encoder = encoder.freeze().to(device)
    return encoder, TextFeatureCache.from_config(encoder, config.text_encoder.config, device=device)


def tokenizer_sizes(config: Any, run_dir: Path | None, device: torch.device | str, log: Callable[[str], None]) -> dict:
    """``image_size`` and ``in_channels`` the tokenizer is built for: the run's build record, else its
    validation split's (a run from before the record)."""
    record = read_build_record(run_dir)
    if record is not None:
        return record
    base = _base(config, device, log)
    val = get_registry().build("dataset", config.data, "$.data", BuildContext(split="val", **base))
    return {"image_size": getattr(val, "image_size", None), "in_channels": int(getattr(val, "in_channels", 3))}


def build_tokenizer(
    config: Any,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = _stderr,
    sizes: dict | None = None,
    text_encoder: Any = None,
    train_captions: Callable[[], Any] | None = None,
) -> nn.Module:
    """The quantizer and backbone of a tokenizer run file, freshly initialised (seeded as in training).

    ``sizes`` (:func:`tokenizer_sizes`; default: from the validation split). A tokenizer that reads
    text when built gets ``text_encoder`` and ``train_captions`` (built here when not given).
    """
    registry = get_registry()
    base = _base(config, device, log)
    sizes = sizes if sizes is not None else tokenizer_sizes(config, None, device, log)
    if uses_text_at_build(config):
        if text_encoder is None:
            text_encoder, _ = build_text_encoder(config, device, log)
        if train_captions is None:
            train = registry.build("dataset", config.data, "$.data", BuildContext(split="train", **base))
            train_captions = train.all_captions
    context = BuildContext(
        image_size=sizes["image_size"],
        in_channels=sizes["in_channels"],
        text_encoder=text_encoder,
        train_captions=train_captions,
        cache_dir=str(cache_root() / "components"),
        **base,
    )
    torch.manual_seed(config.run.seed)
    context.quantizer = registry.build("quantizer", config.model.quantizer, "$.model.quantizer", context)
    return registry.build("backbone", config.model.backbone, "$.model.backbone", context)


@dataclass
class TokenizerRun:
    """A trained tokenizer in eval mode with what identifies it: the run file it trained with, the
    checkpoint read, and the data sizes it was built for."""

    tokenizer: nn.Module
    loaded: LoadedRunFile
    checkpoint: CheckpointRead
    run_dir: Path
    in_channels: int
    image_size: int | None = None

    @property
    def config(self) -> Any:
        return self.loaded.config

    @property
    def step(self) -> int:
        return self.checkpoint.step

    def identity(self) -> dict[str, str]:
        """Run directory, checkpoint directory and model-file SHA-256 (what a downstream run pins)."""
        return {
            "run_dir": str(self.run_dir.resolve()),
            "checkpoint": str(self.checkpoint.path.resolve()),
            "sha256": self.checkpoint.sha256,
        }


def load_tokenizer_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = _stderr,
    sha256: str | None = None,
    name: str = "tokenizer",
) -> TokenizerRun:
    """A tokenizer run's tokenizer with the weights of ``checkpoint``, frozen, in eval mode on ``device``.

    ``sha256`` pins the model file (``$.<name>.sha256`` of a downstream run file): another file is refused.
    """
    run_dir = Path(run_dir).expanduser()
    loaded = read_run_file(run_dir, [f"run.device={device}"])
    if isinstance(loaded.config, DownstreamRunFile):
        raise RunDirError(
            f"{run_dir}: a downstream run (a model trained on frozen codes), not a tokenizer run; give the run "
            "directory of its tokenizer (its resolved.toml names it under [tokenizer])"
        )
    read = read_checkpoint(run_dir, checkpoint, log)
    check_sha256(read, sha256, name)
    sizes = tokenizer_sizes(loaded.config, run_dir, device, log)
    tokenizer = build_tokenizer(loaded.config, device, log, sizes)
    ckpt.load_module(tokenizer, read.tensors, "tokenizer", read.path)
    tokenizer = tokenizer.to(device).eval()
    for parameter in tokenizer.parameters():
        parameter.requires_grad_(False)
    return TokenizerRun(
        tokenizer=tokenizer,
        loaded=loaded,
        checkpoint=read,
        run_dir=run_dir,
        in_channels=int(sizes["in_channels"]),
        image_size=sizes.get("image_size"),
    )


def check_sha256(read: CheckpointRead, expected: str | None, name: str) -> None:
    """Refuse a checkpoint whose model file is not the one ``$.<name>.sha256`` pins."""
    if expected is not None and expected != read.sha256:
        raise CheckpointError(
            f"{read.path / checkpoint_files.MODEL_FILE}: SHA-256 {read.sha256} differs from $.{name}.sha256 = {expected}; "
            f"the tokenizer changed since this run file was written. Remove {name}.sha256 to accept it"
        )


class LoadedTokenizer:
    """A trained tokenizer, frozen and in eval mode, with its codebook.

    ``module`` is the backbone (:class:`lgvq_core.tokenizer.Tokenizer`); ``run_dir``, ``checkpoint``
    (the checkpoint directory read), ``sha256`` (its model file) and ``step`` say what was loaded;
    ``image_size`` and ``in_channels`` what it was trained on.
    """

    def __init__(self, run: TokenizerRun) -> None:
        self._run = run
        self.module = run.tokenizer
        self.device = next(iter(run.tokenizer.parameters())).device
        self.run_dir: Path = run.run_dir
        self.checkpoint: Path = run.checkpoint.path
        self.sha256: str = run.checkpoint.sha256
        self.step: int = run.step
        self.image_size = run.image_size
        self.in_channels = run.in_channels

    @property
    def codebook(self) -> torch.Tensor:
        """K×D code vectors (detached)."""
        return self.module.quantizer.codebook.detach()

    @property
    def codebook_size(self) -> int:
        return int(self.module.quantizer.codebook_size)

    def _images(self, images: Any) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"encode() takes a batch of images B×{self.in_channels}×H×W with values in [-1, 1], got a tensor of "
                f"shape {tuple(images.shape)}; add a batch dimension with images.unsqueeze(0)"
            )
        if self.image_size is not None and tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"this tokenizer was trained on {self.image_size}×{self.image_size} images, got "
                f"{images.shape[-2]}×{images.shape[-1]}; resize them first"
            )
        return images.to(self.device, torch.float32)

    def encode(self, images: Any) -> torch.Tensor:
        """Code indices (LongTensor B×h×w, or B×k×h×w for a quantizer with k codes per position)."""
        with torch.no_grad():
            return self.module.quantizer(self.module.encode(self._images(images))).indices

    def embed(self, codes: Any) -> torch.Tensor:
        """The code vectors at ``codes``: B×D×h×w, what the decoder reads."""
        with torch.no_grad():
            return self.module.quantizer.decode_indices(self._codes(codes))

    def decode(self, codes: Any) -> torch.Tensor:
        """Images (B×C×H×W, about [-1, 1]) from code indices."""
        with torch.no_grad():
            return self.module.decode_indices(self._codes(codes))

    def _codes(self, codes: Any) -> torch.Tensor:
        codes = torch.as_tensor(codes).to(self.device)
        if codes.dtype not in (torch.int32, torch.int64) or codes.dim() not in (3, 4):
            raise ValueError(
                f"codes must be integer indices B×h×w (or B×k×h×w), as encode() returns; got {codes.dtype} of "
                f"shape {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}) (the codebook size)")
        return codes.long()

    def __repr__(self) -> str:
        return (
            f"LoadedTokenizer({type(self.module).__name__}, K={self.codebook_size}, step {self.step}, "
            f"{self.checkpoint}, device {self.device})"
        )


def load_tokenizer(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedTokenizer:
    """The tokenizer of a tokenizer run directory with the weights of ``checkpoint``.

    ``checkpoint``: ``"best"`` (the best validation checkpoint; the last one when no validation
    ran), ``"last"`` or a checkpoint directory. The checkpoint is verified against its manifest;
    only the tokenizer is built (no datasets, text encoder or alignment heads).

    ``run_dir`` may also be a tokenizer folder written by ``lgvq export --format folder``
    (:mod:`lgvq_core.interop.tokenizer_folder`): it holds the weights of one checkpoint, so
    ``checkpoint`` is left at its default.
    """
    if tokenizer_folder.is_tokenizer_folder(run_dir):
        if checkpoint != "best":
            raise RunDirError(
                f"{run_dir}: a tokenizer folder holds the weights of one checkpoint; leave checkpoint= out"
            )
        return LoadedTokenizer(tokenizer_folder.load_tokenizer_folder(run_dir, device, _stderr))
    return LoadedTokenizer(load_tokenizer_run(run_dir, checkpoint, device))
