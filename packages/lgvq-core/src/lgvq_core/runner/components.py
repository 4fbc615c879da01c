"""Building a run: data, text encoder and cache, tokenizer, alignment heads, discriminator, DDP.

:func:`build_components` builds the parts from a validated run file (``lgvq eval`` uses it too);
:func:`build_run` moves them to the device, wraps them for DistributedDataParallel, asks the
plugins for optimizers and returns the :class:`~lgvq_core.runner.context.RunContext`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lgvq_core.alignment.module import build_alignment_module
from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.config.schema import DownstreamRunFile
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError, DataError, LgvqError
from lgvq_core.quantizers.base import index_problem
from lgvq_core.registry import get_registry
from lgvq_core.runner import distributed as distr
from lgvq_core.runner import kinds
from lgvq_core.runner import optim as optim_module
from lgvq_core.runner.context import AUTOCAST_DTYPE, RunContext, Scalers, TokenizerRunContext
from lgvq_core.runner.determinism import apply_determinism
from lgvq_core.runner.downstream_run import build_downstream_run
from lgvq_core.runner.init_from import apply_init_from
from lgvq_core.runner.layout import choose_channels_last, probe_images
from lgvq_core.runner.step import DiscriminatorModule, GeneratorModule
from lgvq_core.runner.tokenizer_run import TOKENIZER
from lgvq_core.text_feature_cache import TextFeatureCache, cache_root


@dataclass
class Components:
    """The built parts of a run, on the CPU, before device placement and DDP wrapping."""

    train_data: Any
    val_data: Any
    text_encoder: nn.Module | None
    text_cache: Any
    tokenizer: nn.Module
    alignment: nn.Module | None
    discriminator: nn.Module | None


def build_components(config, device: torch.device, log=print) -> Components:
    """Build data, text encoder + cache, quantizer, backbone, alignment heads and discriminator."""
    registry = get_registry()
    base = dict(device=str(device), seed=config.run.seed, log=log, skip_bad_items=config.train.skip_bad_items)
    train_data = registry.build("dataset", config.data, "$.data", BuildContext(split="train", **base))
    val_data = registry.build("dataset", config.data, "$.data", BuildContext(split="val", **base))
    if len(train_data) == 0:
        raise DataError("the training split of [data] is empty")
    image_size = getattr(train_data, "image_size", None)

    text_encoder = text_cache = None
    if config.text_encoder is not None:
        text_encoder = registry.build("text_encoder", config.text_encoder, "$.text_encoder", BuildContext(**base))
        text_encoder = text_encoder.freeze().to(device)
        text_cache = TextFeatureCache.from_config(text_encoder, config.text_encoder.config, device=device)

    context = BuildContext(
        image_size=image_size,
        in_channels=getattr(train_data, "in_channels", 3),
        text_encoder=text_encoder,
        train_captions=train_data.all_captions,
        cache_dir=str(cache_root() / "components"),
        **base,
    )
    torch.manual_seed(config.run.seed)
    quantizer = registry.build("quantizer", config.model.quantizer, "$.model.quantizer", context)
    context.quantizer = quantizer
    tokenizer = registry.build("backbone", config.model.backbone, "$.model.backbone", context)
    alignment = (
        _build_alignment(config, tokenizer, text_encoder, image_size, context, log) if config.alignment else None
    )
    return Components(
        train_data=train_data,
        val_data=val_data,
        text_encoder=text_encoder,
        text_cache=text_cache,
        tokenizer=tokenizer,
        alignment=alignment,
        discriminator=tokenizer.make_discriminator(),
    )


def _build_alignment(config, tokenizer, text_encoder, image_size, context: BuildContext, log) -> nn.Module:
    """The shared code ViT and every ``[[alignment]]`` loss, as one module."""
    registry = get_registry()
    if image_size is None:
        raise ConfigError(["$.data: the dataset does not report image_size, which the code ViT needs"])
    side = image_size // tokenizer.downsample
    context.code_dim = tokenizer.code_dim
    context.latent_size = (side, side)
    losses = []
    for i, component in enumerate(config.alignment):
        module = registry.build("alignment_loss", component, f"$.alignment[{i}]", context)
        losses.append((component.type, module, component.config.weight))
        warning = getattr(module, "leak_warning", None)
        declared = getattr(config.text_encoder.config, "causal", None)
        message = warning(text_encoder) if callable(warning) and declared is None else None
        if message:  # configs that declare `causal` were already warned about by the check
            log(f"warning: $.alignment[{i}]: {message}")
    vit = config.code_vit
    return build_alignment_module(losses, vit.layers, vit.heads, context, code_vit_width=vit.width)


def compiled_parts(tokenizer: nn.Module) -> list[tuple[str, nn.Module]]:
    """What ``run.compile`` compiles of a tokenizer: its encoder and decoder, else the whole of it."""
    parts = [(name, getattr(tokenizer, name, None)) for name in ("encoder", "decoder")]
    parts = [(name, module) for name, module in parts if isinstance(module, nn.Module)]
    return parts or [("tokenizer", tokenizer)]


def apply_speed_options(run_section, tokenizer: nn.Module, discriminator: nn.Module | None, log) -> None:
    """``run.channels_last`` and ``run.compile``, in place (parameter names and checkpoints unchanged)."""
    modules = [m for m in (tokenizer, discriminator) if m is not None]
    if run_section.channels_last:
        for module in modules:
            module.to(memory_format=torch.channels_last)
    if run_section.compile != "off":
        targets = compiled_parts(tokenizer)
        if discriminator is not None:
            targets.append(("discriminator", discriminator))
        for _, module in targets:
            module.compile(mode=run_section.compile)
        names = ", ".join(name for name, _ in targets)
        log(f"torch.compile (mode {run_section.compile}): {names}; the first steps compile")


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    """A factory of the autocast context of ``run.precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPE[precision])


def _register_defaults(manager) -> None:
    """The default training step and optimizers (the run kind's) are a plugin like any other, tried last."""
    if not manager.is_registered(kinds) and manager.get_plugin("lgvq-defaults") is None:
        manager.register(kinds, name="lgvq-defaults")


def build_run(loaded: LoadedRunFile, overrides: list[str] | None = None, resuming: bool = False) -> RunContext:
    """Everything a run needs, on its device, wrapped for DDP under ``torchrun``, with optimizers.

    ``resuming``: the run's own ``last`` checkpoint will be restored, so ``train.init_from`` is not read.
    """
    config = loaded.config
    info = distr.init_distributed(config.run.device)
    device = distr.resolve_device(config.run.device, info)
    apply_determinism(config.run.deterministic)

    def log(message: str) -> None:
        if info.is_main:
            print(message, flush=True)

    if isinstance(config, DownstreamRunFile):  # the one place that picks a kind's builder
        run = build_downstream_run(loaded, overrides, info, device, log)
        # resolved.toml pins the exact tokenizer checkpoints the run trained on
        config.tokenizer.run_dir = run.tokenizer_identity["run_dir"]
        config.tokenizer.checkpoint = run.tokenizer_identity["checkpoint"]
        config.tokenizer.sha256 = run.tokenizer_identity["sha256"]
        if config.condition_tokenizer is not None:
            config.condition_tokenizer.run_dir = run.condition_tokenizer_identity["run_dir"]
            config.condition_tokenizer.checkpoint = run.condition_tokenizer_identity["checkpoint"]
            config.condition_tokenizer.sha256 = run.condition_tokenizer_identity["sha256"]
        return _finish(run)
    parts = build_components(config, device, log)
    tokenizer = parts.tokenizer.to(device)
    alignment = parts.alignment.to(device) if parts.alignment is not None else None
    discriminator = parts.discriminator.to(device) if parts.discriminator is not None else None
    if not resuming:  # a resumed run's weights come from its own checkpoint
        apply_init_from(config.train, {"tokenizer": tokenizer, "discriminator": discriminator}, log)
    if config.run.channels_last == "auto":  # measured on rank 0, the same layout on every rank
        chosen = None
        if info.is_main:
            images = probe_images(parts.train_data, config.train.batch_size, device)
            chosen = choose_channels_last(
                tokenizer, discriminator, images, config.run.precision, _autocast(config.run.precision, device), log
            )
        config.run.channels_last = bool(distr.broadcast_object(chosen, info))  # resolved.toml records it
    apply_speed_options(config.run, tokenizer, discriminator, log)
    run = TokenizerRunContext(
        config=config,
        loaded=loaded,
        dist=info,
        device=device,
        model=tokenizer,
        alignment=alignment,
        discriminator=discriminator,
        text_encoder=parts.text_encoder,
        text_cache=parts.text_cache,
        train_data=parts.train_data,
        val_data=parts.val_data,
        lr=optim_module.effective_lr(config.train, info.world_size),
        overrides=list(overrides or []),
        run_kind=TOKENIZER,
    )
    for module in (tokenizer, alignment):
        if module is not None:
            run.model_parameters += [p for p in module.parameters() if p.requires_grad]
    if discriminator is not None:
        run.discriminator_parameters = [p for p in discriminator.parameters() if p.requires_grad]

    checked = []

    def on_quantize(output) -> None:
        if not checked:  # the first step: a quantizer whose indices miss its codebook stops here, not at exit 0
            checked.append(True)
            problem = index_problem(output.indices, int(tokenizer.quantizer.codebook_size))
            if problem is not None:
                quantizer = config.model.quantizer.type if config.model.quantizer else "the backbone's own"
                raise LgvqError(
                    f"$.model.quantizer ({quantizer}): {problem} (the quantizer contract's rule, which "
                    "lgvq_core.testing checks)"
                )
        run.step_statistics = {k: v.detach() for k, v in output.stats.items()}
        run.plugin_manager.hook.lgvq_after_quantize(run=run, output=output)

    generator = GeneratorModule(
        tokenizer,
        alignment,
        run.text_encoder,
        on_quantize,
        alignment_fp32=config.run.alignment_precision == "fp32" and config.run.precision != "fp32",
    )
    disc_module = DiscriminatorModule(tokenizer, discriminator) if discriminator is not None else None
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        generator = DistributedDataParallel(generator, device_ids=ids, find_unused_parameters=alignment is not None)
        if disc_module is not None:
            disc_module = DistributedDataParallel(disc_module, device_ids=ids)
    run.model_module = generator
    run.discriminator_module = disc_module
    return _finish(run)


def _finish(run: RunContext) -> RunContext:
    """Optimizers (from the plugins) and gradient scalers."""
    manager = get_registry().manager
    _register_defaults(manager)
    run.plugin_manager = manager
    run.optimizers = manager.hook.lgvq_make_optimizers(run=run)
    if run.optimizers is None:
        raise LgvqError("no plugin answered lgvq_make_optimizers")
    fp16 = run.config.run.precision == "fp16"
    run.scalers = Scalers(
        model=torch.amp.GradScaler(run.device.type, enabled=fp16),
        discriminator=torch.amp.GradScaler(run.device.type, enabled=fp16),
    )
    return run
