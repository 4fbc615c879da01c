"""The run file's own sections. Component tables (``type = ...``) are typed by their plugin."""

from __future__ import annotations

import re
from typing import Any, Literal

import attrs

from lgvq_core.config.fields import non_negative, option, positive

_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


def _device(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not _DEVICE.match(value):
        raise ValueError(f'must be "cpu", "cuda" or "cuda:N", got {value!r}')


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", value):
        raise ValueError(f"must be a non-empty name of letters, digits, '.', '_' or '-', got {value!r}")


@attrs.define
class RunSection:
    """Where the run lives and what it runs on."""

    name: str = option("lgvq", "Run name; the run directory is <output_dir>/<name>/<timestamp>-<id>.", _name)
    seed: int = option(0, "Seed for model initialisation, data order, caption sampling and masks.")
    output_dir: str = option("runs", "Root folder of run directories (relative to the working directory).")
    device: str = option("cpu", 'Device: "cpu", "cuda" (the local rank\'s GPU under torchrun) or "cuda:N".', _device)
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "Autocast precision of the forward pass; fp16 adds a gradient scaler."
    )
    log_every: int = option(10, "Write a metrics.jsonl line (and a log line) every N steps.", positive)
    progress: Literal["auto", "bar", "log", "off"] = option(
        "auto", "Progress display: a bar on a terminal and log lines otherwise (auto), or forced."
    )
    deterministic: bool = option(
        False,
        "Ask torch for deterministic kernels (cuDNN, cuBLAS, scatter; slower on GPU) so one machine's runs repeat; "
        "CPU runs repeat on one machine and thread count anyway. Never across CPUs, thread counts or GPUs.",
    )


@attrs.define
class TrainSection:
    """The optimisation schedule; defaults follow the official LG-VQ configs."""

    batch_size: int = option(8, "Images per step on each process (global batch = batch_size x processes).", positive)
    max_steps: int = option(1000, "Generator steps to train for.", positive)
    base_lr: float = option(4.5e-6, "Base learning rate before scaling (taming/LG-VQ: 4.5e-6).", positive)
    lr_scaling: Literal["linear", "none"] = option(
        "linear",
        "linear: lr = base_lr x accumulate x world_size x batch_size (taming's rule); none: lr = base_lr.",
    )
    lr: float | None = option(
        None,
        "Learning rate used as given, skipping the scaling rule (resolved.toml records the effective one).",
        positive,
    )
    betas: tuple[float, float] = option((0.5, 0.9), "Adam betas of both optimizers.")
    weight_decay: float = option(0.0, "Adam weight decay.", non_negative)
    grad_clip: float | None = option(None, "Clip the gradient norm of each optimizer to this value.", positive)
    accumulate: int = option(1, "Gradient accumulation: micro-batches per optimizer step.", positive)
    val_every: int = option(500, "Validate every N steps (and at the end).", positive)
    val_batches: int | None = option(None, "Validation batches per pass (all when unset).", positive)
    checkpoint_every: int = option(1000, "Write checkpoints/last every N steps (and at the end).", positive)
    best_metric: str = option("rec_loss", "Validation metric (lower is better) that selects checkpoints/best.")
    sample_every: int = option(500, "Write a samples/ grid of inputs vs reconstructions every N steps.", positive)
    num_workers: int = option(0, "DataLoader worker processes.", non_negative)
    skip_bad_items: bool = option(
        False,
        "Skip unreadable images or captions instead of failing; skipped items are counted and reported.",
    )


@attrs.define
class CodeViTSection:
    """The code ViT shared by the alignment losses (SPEC 2.1): width = code dim."""

    layers: int = option(2, "Transformer blocks.", positive)
    heads: int = option(1, "Attention heads (must divide the code dim).", positive)


def _unique_seeds(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if len(set(value)) != len(value):
        raise ValueError(f"seeds must differ from each other, got {value}")
    if any(seed < 0 for seed in value):
        raise ValueError(f"seeds must be >= 0, got {value}")


def _unique_labels(instance: Any, attribute: attrs.Attribute, value: list[Any]) -> None:
    labels = [arm.label for arm in value]
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels must differ from each other, got {labels}")


@attrs.define
class CompareArm:
    """One arm of ``lgvq compare``: the run file with some keys overridden."""

    label: str = option(doc="Column title of the arm in the comparison table.", validator=_name)
    overrides: list[str] = option(factory=list, doc='KEY=VALUE overrides, as `--set` takes them (e.g. "alignment=[]").')


@attrs.define
class CompareSection:
    """What ``lgvq compare`` trains: every arm once per seed. Ignored by ``lgvq run``."""

    seeds: list[int] = option(
        factory=list, doc="Seeds every arm is trained with; empty: run.seed alone.", validator=_unique_seeds
    )
    arms: list[CompareArm] = option(
        factory=list,
        doc='The arms; empty: the file as given ("LG-VQ") and without its [[alignment]] losses ("baseline").',
        validator=_unique_labels,
    )


@attrs.frozen
class Component:
    """A component table after validation: its registry name and its plugin's config object."""

    type: str
    config: Any


@attrs.define
class ModelSection:
    backbone: Component = option(doc="The tokenizer backbone.", component="backbone")
    quantizer: Component | None = option(
        None, "The quantizer; defaults to the backbone's own choice.", component="quantizer"
    )


@attrs.define
class RunFile:
    """A whole run file."""

    model: ModelSection = option(doc="[model.backbone] and [model.quantizer].")
    data: Component = option(doc="The image-caption dataset.", component="dataset")
    run: RunSection = option(factory=RunSection, doc="Name, seed, device, precision.")
    train: TrainSection = option(factory=TrainSection, doc="Optimisation schedule.")
    text_encoder: Component | None = option(
        None, "The frozen text encoder (required by [[alignment]]).", component="text_encoder"
    )
    alignment: list[Component] = option(
        factory=list, doc="LG-VQ alignment losses, each with its weight.", component="alignment_loss"
    )
    code_vit: CodeViTSection = option(factory=CodeViTSection, doc="The code ViT shared by the alignment losses.")
    tasks: list[Component] = option(factory=list, doc="Evaluation tasks run at the end.", component="task")
    callbacks: list[Component] = option(factory=list, doc="Run callbacks.", component="callback")
    compare: CompareSection = option(factory=CompareSection, doc="Seeds and arms of `lgvq compare`.")
