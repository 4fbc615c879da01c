"""The run file's own sections. Component tables (``type = ...``) are typed by their plugin."""

from __future__ import annotations

import re
from typing import Any, Literal

import attrs

from lgvq_core.config.fields import finite, non_negative, option, positive

#: Largest run seed: the data order adds the epoch to it, and every generator takes 64 bits.
MAX_SEED = 2**62

_DEVICE = re.compile(r"cpu|cuda|cuda:\d+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Longest run name: the run directory's name and its files must stay within a file name's 255 bytes.
MAX_NAME = 100


def _device(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not _DEVICE.fullmatch(value):
        raise ValueError(f'must be "cpu", "cuda" or "cuda:N", got {value!r}')


def _seed(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"must be in [0, 2**62] (seeds are 64-bit and the epoch is added), got {value!r}")


def _betas(instance: Any, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if not all(0.0 <= beta < 1.0 for beta in value):
        raise ValueError(f"Adam betas must each be in [0, 1), got {list(value)!r}")


def _unit_fraction(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be in [0, 1], got {value!r}")


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or not _NAME.fullmatch(value):  # fullmatch: "$" would let a trailing newline through
        raise ValueError(f"must be a non-empty name of letters, digits, '.', '_' or '-', got {value!r}")
    if len(value) > MAX_NAME:
        raise ValueError(f"must be at most {MAX_NAME} characters (it names folders), got {len(value)}")


@attrs.define
class RunSection:
    """Where the run lives and what it runs on."""

    name: str = option("lgvq", "Run name; the run directory is <output_dir>/<name>/<timestamp>-<id>.", _name)
    seed: int = option(0, "Seed for model initialisation, data order, caption sampling and masks.", _seed)
    output_dir: str = option("runs", "Root folder of run directories (relative to the working directory).")
    device: str = option("cpu", 'Device: "cpu", "cuda" (the local rank\'s GPU under torchrun) or "cuda:N".', _device)
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "Autocast precision of the forward pass; fp16 adds a gradient scaler."
    )
    alignment_precision: Literal["autocast", "fp32"] = option(
        "autocast",
        "Precision of the alignment losses and their code ViT: the run's autocast (autocast), or fp32 outside "
        "autocast on the fp32 codes. Their matrices are small, so under bf16/fp16 the casts around each op can "
        "cost more than the narrower arithmetic saves (bench/lg_overhead.py --levers alignfp32 measures it).",
    )
    channels_last: Literal[False, True, "auto"] = option(
        False,
        "Keep the tokenizer's and the discriminator's weights and the images in channels-last memory format: "
        "the same arithmetic in another layout. Its sign depends on the device (a step took 0.84x as long on an "
        'AMD EPYC, 1.44x on an Intel Xeon): "auto" times a few passes of this run\'s tokenizer both ways at '
        "start-up, takes the faster, logs it and caches the decision per device model and model shape; "
        "resolved.toml records the layout taken.",
    )
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = option(
        "off",
        "torch.compile the tokenizer's encoder and decoder (the whole tokenizer when it has neither) and the "
        "discriminator, in this mode. The first steps then compile (minutes); on the CPU in the README's speed "
        "section it did not pay, so measure your device first (bench/train_step.py --levers compile). "
        "Checkpoints are the same as without it.",
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
    base_lr: float = option(4.5e-6, "Base learning rate before scaling (taming/LG-VQ: 4.5e-6).", [positive, finite])
    lr_scaling: Literal["linear", "none"] = option(
        "linear",
        "linear: lr = base_lr x accumulate x world_size x batch_size (taming's rule); none: lr = base_lr.",
    )
    lr: float | None = option(
        None,
        "Learning rate used as given, skipping the scaling rule (resolved.toml records the effective one).",
        [positive, finite],
    )
    warmup_steps: int = option(
        0,
        "Raise the learning rate linearly from lr/warmup_steps to lr over the first N steps (0: none, official).",
        non_negative,
    )
    lr_schedule: Literal["constant", "cosine"] = option(
        "constant",
        "After warm-up: constant (official) or cosine decay to lr x final_lr_fraction at max_steps.",
    )
    final_lr_fraction: float = option(
        0.1, "Learning rate at max_steps as a fraction of lr (lr_schedule = cosine).", _unit_fraction
    )
    betas: tuple[float, float] = option((0.5, 0.9), "Adam betas of both optimizers, each in [0, 1).", _betas)
    weight_decay: float = option(0.0, "Adam weight decay.", [non_negative, finite])
    grad_clip: float | None = option(None, "Clip the gradient norm of each optimizer to this value.", positive)
    optimizer_impl: Literal["auto", "for-loop", "foreach", "fused"] = option(
        "auto",
        "Implementation of the Adam/AdamW update: torch's choice (auto), one tensor at a time (for-loop), "
        "multi-tensor (foreach) or one fused kernel (fused; CPU and CUDA). The arithmetic is the same up to rounding.",
    )
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
    init_from: str | None = option(
        None,
        "Tokenizer runs: start from the weights of this run directory (a tokenizer run, or one written by "
        "`lgvq import`): the tokenizer, and the discriminator when both runs have one, strictly by key and "
        "shape; not the optimizer state or the step. A resumed run continues from its own checkpoint.",
    )
    init_checkpoint: str = option("best", "Which checkpoint of init_from: best, last, or a checkpoint directory.")


@attrs.define
class CodeViTSection:
    """The code ViT shared by the alignment losses (docs/method.md: Code ViT): width = code dim by default."""

    layers: int = option(2, "Transformer blocks.", positive)
    heads: int = option(1, "Attention heads (must divide the code dim, or width when it is set).", positive)
    width: int | None = option(
        None,
        "Width of the transformer blocks. Unset (official): the code dim D. Set: a Linear D->width maps the "
        "codes in first and proj is width x W. A small-scale speed lever: a narrow ViT (with fewer layers) "
        "costs far less per step than one as wide as a large code dim.",
        positive,
    )


def _unique_seeds(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if len(set(value)) != len(value):
        raise ValueError(f"seeds must differ from each other, got {value}")
    if any(seed < 0 for seed in value):
        raise ValueError(f"seeds must be >= 0, got {value}")


def _unique_labels(instance: Any, attribute: attrs.Attribute, value: list[Any]) -> None:
    labels = [arm.label for arm in value]
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels must differ from each other, got {labels}")


def _reference_arm(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    labels = [arm.label for arm in instance.arms] or ["LG-VQ", "baseline"]
    if value is not None and value not in labels:
        raise ValueError(f"{value!r} is not an arm; the arms are {', '.join(labels)}")


@attrs.define
class CompareArm:
    """One arm of ``lgvq compare``: the run file with some keys overridden."""

    label: str = option(doc="Column title of the arm in the comparison table.", validator=_name)
    overrides: list[str] = option(factory=list, doc='KEY=VALUE overrides, as `--set` takes them (e.g. "alignment=[]").')
    downstream: bool = option(
        True,
        "Train the [compare] downstream models on this arm's codes too (false: its tokenizer's own tasks only, "
        "and its downstream rows read n/a).",
    )


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
    downstream: list[str] = option(
        factory=list,
        doc="Downstream run files (paths relative to this file) trained on the codes of every arm and seed; "
        "their [[tasks]] and validation NLL join the table, labelled by the file's name.",
    )
    reference: str | None = option(
        None,
        "Label of the arm every other arm is compared with (differences: arm - reference). Unset: the first "
        "arm, compared as first - other.",
        _reference_arm,
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
    loggers: list[Component] = option(
        factory=list,
        doc="Experiment trackers that receive the metric lines, hyperparameters, pictures and task numbers "
        "(metrics.jsonl stays the record).",
        component="logger",
    )
    compare: CompareSection = option(factory=CompareSection, doc="Seeds and arms of `lgvq compare`.")


# ------------------------------------------------------------------------------------------
# downstream runs: a model trained on a frozen tokenizer's codes
# ------------------------------------------------------------------------------------------
@attrs.define
class TokenizerSection:
    """The frozen tokenizer a downstream run trains on: a run directory written by ``lgvq run``."""

    run_dir: str = option(doc="Run directory of the trained tokenizer (the folder `lgvq run` printed).")
    checkpoint: str = option(
        "best",
        'Which checkpoint: "best", "last", or the path of a checkpoint directory (resolved.toml records the path).',
    )
    sha256: str | None = option(
        None,
        "SHA-256 of the checkpoint's model.safetensors. resolved.toml records it; when given, a checkpoint with "
        "other content is refused.",
    )


@attrs.define
class CodesSection:
    """How the frozen tokenizer's codes of each split are computed and cached."""

    flip: bool = option(
        False,
        "Also encode every image flipped left-right; a training item then uses the flipped codes with "
        "probability 0.5 (drawn from the item's seed, so resuming stays exact).",
    )
    batch_size: int = option(32, "Images per batch while encoding a split once.", positive)


@attrs.define
class DownstreamRunFile:
    """A run file that trains a model on the frozen codes of a trained tokenizer ([tokenizer] + [downstream]).

    ``[data]`` and ``[text_encoder]`` default to the tokenizer run's own. ``[condition_tokenizer]`` (same
    keys as ``[tokenizer]``) names a second frozen tokenizer for conditions given as codes.
    """

    tokenizer: TokenizerSection = option(doc="The frozen tokenizer: a run directory and a checkpoint.")
    downstream: Component = option(doc="The model trained on the codes.", component="downstream")
    data: Component = option(doc="The dataset (default: the tokenizer run's [data]).", component="dataset")
    run: RunSection = option(factory=RunSection, doc="Name, seed, device, precision.")
    train: TrainSection = option(factory=TrainSection, doc="Optimisation schedule.")
    codes: CodesSection = option(factory=CodesSection, doc="The code cache.")
    condition_tokenizer: TokenizerSection | None = option(
        None,
        "A second frozen tokenizer that encodes each item's condition: the mask autoencoder (a run on [data] type = "
        '"segmentation-maps") of code-gpt\'s semantic_source = "vq". Its codes are cached like the image codes.',
    )
    text_encoder: Component | None = option(
        None,
        "Frozen text encoder for text conditions (default: the tokenizer run's [text_encoder]).",
        component="text_encoder",
    )
    tasks: list[Component] = option(factory=list, doc="Evaluation tasks run at the end.", component="task")
    callbacks: list[Component] = option(factory=list, doc="Run callbacks.", component="callback")
    loggers: list[Component] = option(
        factory=list,
        doc="Experiment trackers that receive the metric lines, hyperparameters, pictures and task numbers "
        "(metrics.jsonl stays the record).",
        component="logger",
    )
