"""The run context: everything a training run holds, as plugins see it.

Every training-loop hook receives it as ``run``. New information is added here as a field, never as
a hook parameter. The loop (:mod:`lgvq_core.runner.loop`) owns it; callbacks read it and may ask it
to stop (:meth:`RunContext.request_stop`) or add numbers to the next metrics line
(:attr:`RunContext.extra_metrics`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.runner.distributed import DistInfo

if TYPE_CHECKING:
    from lgvq_core.config.schema import DownstreamRunFile, RunFile
    from lgvq_core.downstream import FrozenTokenizer
    from lgvq_core.runner.kinds import RunKind
    from lgvq_core.runner.optim import Optimizers
    from lgvq_core.text_feature_cache import TextFeatureCache

AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Scalers:
    """Gradient scalers (active with ``precision = "fp16"`` only): the model's, and a tokenizer run's
    discriminator's (unused elsewhere)."""

    model: torch.amp.GradScaler
    discriminator: torch.amp.GradScaler


@dataclass(kw_only=True)
class RunContext:
    """What every run holds, whatever it trains; the ``run`` argument of every training-loop hook.

    The loop, checkpoints, resume, signals, the NaN guard, DDP, precision and callbacks need only
    this. ``run_kind`` (:mod:`lgvq_core.runner.kinds`) answers what differs, and ``kind`` is its
    name: ``"tokenizer"`` (a :class:`TokenizerRunContext`) or ``"downstream"`` (a
    :class:`DownstreamRunContext`: a model trained on a frozen tokenizer's cached codes).
    ``model`` is what the run trains, unwrapped; ``model_module`` is what DistributedDataParallel
    wraps under ``torchrun`` (the plain module otherwise); ``model_parameters`` the trainable
    parameters the model's optimizer and clipping see.
    """

    config: RunFile | DownstreamRunFile
    loaded: LoadedRunFile
    dist: DistInfo
    device: torch.device
    model: nn.Module
    text_encoder: nn.Module | None
    text_cache: TextFeatureCache | None
    train_data: Any
    val_data: Any
    lr: float
    #: What differs between the two kinds of run (:mod:`lgvq_core.runner.kinds`); set by the kind's builder.
    run_kind: RunKind
    run_dir: Path | None = None
    model_module: nn.Module | None = None
    #: Trainable parameters of what the run trains (a tokenizer run: tokenizer + alignment heads).
    model_parameters: list[nn.Parameter] = field(default_factory=list)
    optimizers: Optimizers | None = None
    scalers: Scalers | None = None
    plugin_manager: Any = None
    #: Optimizer steps taken (a step may accumulate several micro-batches).
    step: int = 0
    #: Micro-batches drawn from the training stream (its resumable position).
    batches_seen: int = 0
    #: Why the loop stopped or will stop after this step: ``"max_steps"``, ``"signal"``, or a
    #: callback's reason such as ``"early-stopping"``.
    stop_reason: str | None = None
    #: The signal (SIGINT, SIGTERM) that stopped the run, if one did: ``lgvq run`` exits 128 + it.
    stop_signal: int | None = None
    #: Best value of ``train.best_metric`` so far (lower is better).
    best_value: float = math.inf
    #: The step at which this process last saved ``best`` (its weights and state are the run's at that step).
    best_saved_step: int | None = None
    #: Callbacks may add numbers here; they are logged with the next metrics line.
    extra_metrics: dict[str, float] = field(default_factory=dict)
    #: Numbers the last step measured besides its loss terms (a tokenizer run: its quantizer's statistics).
    step_statistics: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped_items: list[tuple[int, str]] = field(default_factory=list)
    #: Whether the unreadable validation items were listed (once; later validations give the count).
    validation_skips_listed: bool = False
    overrides: list[str] = field(default_factory=list)
    #: The run file's ``[[loggers]]`` on rank 0 (:class:`lgvq_core.loggers.RunLoggers`), else ``None``.
    loggers: Any = None

    @property
    def kind(self) -> str:
        """``"tokenizer"`` or ``"downstream"``: the name of :attr:`run_kind`."""
        return self.run_kind.name

    def saved_modules(self) -> dict[str, nn.Module | None]:
        """What a checkpoint holds, by weight prefix (never the text encoder, never a frozen tokenizer)."""
        return self.run_kind.saved_modules(self)

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self):
        """The autocast context of ``run.precision`` (a no-op for fp32)."""
        precision = self.config.run.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPE[precision])

    def text_features(self, captions: list[str]):
        return self.text_cache.get(list(captions))

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step (``last`` is saved first)."""
        self.stop_reason = reason

    def log(self, message: str) -> None:
        """Print on rank 0 only."""
        if self.is_main:
            print(message, flush=True)


@dataclass(kw_only=True)
class TokenizerRunContext(RunContext):
    """A tokenizer run: ``model`` is the tokenizer; with it train the alignment module (the code ViT
    and the losses' heads, or ``None`` for a baseline run) and, for a GAN backbone, the discriminator."""

    alignment: nn.Module | None = None
    discriminator: nn.Module | None = None
    #: The discriminator as DistributedDataParallel wraps it (the plain module otherwise).
    discriminator_module: nn.Module | None = None
    #: Trainable discriminator parameters (empty without a discriminator).
    discriminator_parameters: list[nn.Parameter] = field(default_factory=list)


@dataclass(kw_only=True)
class DownstreamRunContext(RunContext):
    """A downstream run: ``model`` is the downstream model, trained on the codes of a frozen tokenizer."""

    #: The frozen tokenizer (never trained, never saved) and what the model sees of it.
    tokenizer: nn.Module | None = None
    frozen_tokenizer: FrozenTokenizer | None = None
    #: Where the tokenizer came from (run_dir, checkpoint, sha256), for resolved.toml.
    tokenizer_identity: dict[str, str] = field(default_factory=dict)
    #: With a ``[condition_tokenizer]``: its run dir, checkpoint and SHA-256.
    condition_tokenizer_identity: dict[str, str] = field(default_factory=dict)
