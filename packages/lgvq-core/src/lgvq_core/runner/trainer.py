"""``lgvq run``: run file in, trained tokenizer and a complete run directory out.

One loop for every backbone. Reading order: :func:`train` builds everything (:func:`build_run`),
restores a checkpoint when resuming, then :func:`_loop` runs steps, logging, validation, samples
and checkpoints until ``train.max_steps``, a signal, or an error.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError, DataError, LgvqError
from lgvq_core.plugins import get_plugin_manager
from lgvq_core.quantizers.base import usage_from_counts
from lgvq_core.registry import get_registry
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner import distributed as distr
from lgvq_core.runner import optim as optim_module
from lgvq_core.runner import step as step_module
from lgvq_core.runner.progress import Progress
from lgvq_core.runner.rundir import MetricsWriter, create_run_dir, environment_report, write_run_files
from lgvq_core.runner.samples import save_reconstruction_grid
from lgvq_core.runner.sampling import ShardSampler, TrainKeySampler
from lgvq_core.runner.step import DiscriminatorModule, GeneratorModule

_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Scalers:
    generator: torch.amp.GradScaler
    discriminator: torch.amp.GradScaler


@dataclass
class RunContext:
    """Everything a run holds; the ``run`` argument of every training-loop hook.

    Plugins read these attributes; new information is added here, never as hook parameters.
    ``model`` is the tokenizer (unwrapped), ``generator_module`` what DDP wraps.
    """

    config: Any
    loaded: LoadedRunFile
    dist: distr.DistInfo
    device: torch.device
    model: nn.Module
    guidance: nn.Module | None
    discriminator: nn.Module | None
    text_encoder: nn.Module | None
    text_cache: Any
    train_data: Any
    val_data: Any
    lr: float
    run_dir: Path | None = None
    generator_module: nn.Module | None = None
    discriminator_module: nn.Module | None = None
    optimizers: Any = None
    scalers: Scalers | None = None
    plugin_manager: Any = None
    step: int = 0
    batches_seen: int = 0
    stop_reason: str | None = None
    best_value: float = math.inf
    #: Callbacks may add numbers here; they are logged with the next metrics line.
    extra_metrics: dict[str, float] = field(default_factory=dict)
    last_output_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped_items: list[tuple[int, str]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    #: Trainable tokenizer + alignment parameters (what the generator optimizer and clipping see).
    generator_parameters: list[nn.Parameter] = field(default_factory=list)
    #: Trainable discriminator parameters (empty without a discriminator).
    discriminator_parameters: list[nn.Parameter] = field(default_factory=list)

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
        precision = self.config.run.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_PRECISION[precision])

    def text_features(self, captions: list[str]):
        return self.text_cache.get(list(captions))

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step (saves ``last`` first)."""
        self.stop_reason = reason

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)


@dataclass
class RunResult:
    run_dir: Path
    step: int
    stop_reason: str
    final_metrics: dict[str, float]
    images_per_second: float
    seconds: float
    val_metrics: dict[str, float] = field(default_factory=dict)
    skipped_items: list[tuple[int, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------
def _register_defaults(manager) -> None:
    for module, name in ((step_module, "lgvq-default-step"), (optim_module, "lgvq-default-optimizers")):
        if not manager.is_registered(module) and manager.get_plugin(name) is None:
            manager.register(module, name=name)


def _log_main(info: distr.DistInfo):
    def log(message: str) -> None:
        if info.is_main:
            print(message, flush=True)

    return log


def build_components(config, info: distr.DistInfo, device: torch.device, log=print) -> dict[str, Any]:
    """Build data, text encoder + cache, quantizer, backbone, alignment and discriminator."""
    registry = get_registry()
    base = dict(device=str(device), seed=config.run.seed, log=log, skip_bad_items=config.train.skip_bad_items)
    train_data = registry.build("dataset", config.data, "$.data", BuildContext(split="train", **base))
    val_data = registry.build("dataset", config.data, "$.data", BuildContext(split="val", **base))
    if len(train_data) == 0:
        raise DataError("the training split of [data] is empty")
    image_size = getattr(train_data, "image_size", None)

    text_encoder = text_cache = None
    if config.text_encoder is not None:
        from lgvq_core.text_cache import TextFeatureCache

        text_encoder = registry.build("text_encoder", config.text_encoder, "$.text_encoder", BuildContext(**base))
        text_encoder = text_encoder.freeze().to(device)
        text_cache = TextFeatureCache.from_config(text_encoder, config.text_encoder.config, device=device)

    from lgvq_core.text_cache import cache_root

    context = BuildContext(
        image_size=image_size,
        text_encoder=text_encoder,
        train_captions=train_data.all_captions,
        cache_dir=str(cache_root() / "components"),
        **base,
    )
    torch.manual_seed(config.run.seed)
    quantizer = registry.build("quantizer", config.model.quantizer, "$.model.quantizer", context)
    context.quantizer = quantizer
    tokenizer = registry.build("backbone", config.model.backbone, "$.model.backbone", context)

    guidance = None
    if config.alignment:
        from lgvq_core.alignment.guidance import build_guidance

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
        guidance = build_guidance(losses, config.code_vit.layers, config.code_vit.heads, context)

    discriminator = tokenizer.make_discriminator()
    return {
        "train_data": train_data,
        "val_data": val_data,
        "text_encoder": text_encoder,
        "text_cache": text_cache,
        "tokenizer": tokenizer,
        "guidance": guidance,
        "discriminator": discriminator,
    }


def build_run(loaded: LoadedRunFile, overrides: list[str] | None = None) -> RunContext:
    config = loaded.config
    info = distr.init_distributed(config.run.device)
    device = distr.resolve_device(config.run.device, info)
    if config.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    log = _log_main(info)
    parts = build_components(config, info, device, log)
    tokenizer = parts["tokenizer"].to(device)
    guidance = parts["guidance"].to(device) if parts["guidance"] is not None else None
    discriminator = parts["discriminator"].to(device) if parts["discriminator"] is not None else None

    run = RunContext(
        config=config,
        loaded=loaded,
        dist=info,
        device=device,
        model=tokenizer,
        guidance=guidance,
        discriminator=discriminator,
        text_encoder=parts["text_encoder"],
        text_cache=parts["text_cache"],
        train_data=parts["train_data"],
        val_data=parts["val_data"],
        lr=optim_module.effective_lr(config.train, info.world_size),
        overrides=list(overrides or []),
    )
    for module in (tokenizer, guidance):
        if module is not None:
            run.generator_parameters += [p for p in module.parameters() if p.requires_grad]
    if discriminator is not None:
        run.discriminator_parameters = [p for p in discriminator.parameters() if p.requires_grad]

    def on_quantize(output) -> None:
        run.last_output_stats = {k: v.detach() for k, v in output.stats.items()}
        run.plugin_manager.hook.lgvq_after_quantize(run=run, output=output)

    generator = GeneratorModule(tokenizer, guidance, run.text_encoder, on_quantize)
    disc_module = DiscriminatorModule(tokenizer, discriminator) if discriminator is not None else None
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        generator = DistributedDataParallel(generator, device_ids=ids, find_unused_parameters=guidance is not None)
        if disc_module is not None:
            disc_module = DistributedDataParallel(disc_module, device_ids=ids)
    run.generator_module = generator
    run.discriminator_module = disc_module

    manager = get_plugin_manager()
    _register_defaults(manager)
    run.plugin_manager = manager
    run.optimizers = manager.hook.lgvq_make_optimizers(run=run)
    if run.optimizers is None:
        raise LgvqError("no plugin answered lgvq_make_optimizers")
    fp16 = config.run.precision == "fp16"
    run.scalers = Scalers(
        generator=torch.amp.GradScaler(device.type, enabled=fp16),
        discriminator=torch.amp.GradScaler(device.type, enabled=fp16),
    )
    return run


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def _checkpoint_tensors(run: RunContext) -> dict[str, torch.Tensor]:
    return ckpt.model_tensors(
        {"tokenizer": run.model, "guidance": run.guidance, "discriminator": run.discriminator},
        exclude=run.text_encoder,
    )


def _checkpoint_state(run: RunContext) -> dict[str, Any]:
    state: dict[str, Any] = {
        "step": run.step,
        "batches_seen": run.batches_seen,
        "best_value": run.best_value,
        "optimizers": {"generator": run.optimizers.generator.state_dict()},
        "scalers": {
            "generator": run.scalers.generator.state_dict(),
            "discriminator": run.scalers.discriminator.state_dict(),
        },
        "rng": ckpt.rng_state(),
        "world_size": run.world_size,
        "skipped_items": [[i, m] for i, m in run.skipped_items],
    }
    if run.optimizers.discriminator is not None:
        state["optimizers"]["discriminator"] = run.optimizers.discriminator.state_dict()
    return state


def save(run: RunContext, pointers: list[str], metrics: dict[str, float] | None = None) -> None:
    """Write a checkpoint on rank 0 (every rank must call it: hooks run there only)."""
    if run.is_main:
        state = _checkpoint_state(run)
        run.plugin_manager.hook.lgvq_save_checkpoint(run=run, state=state)
        info = (
            {"metric": run.config.train.best_metric, "value": metrics.get(run.config.train.best_metric)}
            if metrics
            else None
        )
        ckpt.save_checkpoint(run.run_dir / "checkpoints", run.step, _checkpoint_tensors(run), state, pointers, info)


def restore(run: RunContext, run_dir: Path) -> None:
    """Load ``checkpoints/last`` into the run: weights, optimizers, scalers, RNG, position."""
    path = ckpt.resolve_checkpoint(run_dir, "last")
    tensors, state = ckpt.load_checkpoint(path, map_location="cpu")
    ckpt.load_module(run.model, tensors, "tokenizer", path)
    if run.guidance is not None:
        ckpt.load_module(run.guidance, tensors, "guidance", path)
    if run.discriminator is not None:
        ckpt.load_module(run.discriminator, tensors, "discriminator", path)
    try:
        run.optimizers.generator.load_state_dict(state["optimizers"]["generator"])
        if run.optimizers.discriminator is not None:
            run.optimizers.discriminator.load_state_dict(state["optimizers"]["discriminator"])
    except (KeyError, ValueError) as exc:
        raise ckpt.CheckpointError(f"{path}: optimizer state does not match this run ({exc})") from None
    run.scalers.generator.load_state_dict(state["scalers"]["generator"])
    run.scalers.discriminator.load_state_dict(state["scalers"]["discriminator"])
    ckpt.restore_rng_state(state["rng"])
    run.step = int(state["step"])
    run.batches_seen = int(state["batches_seen"])
    run.best_value = float(state["best_value"])
    run.skipped_items = [(int(i), str(m)) for i, m in state.get("skipped_items", [])]
    if int(state.get("world_size", run.world_size)) != run.world_size:
        run.log(
            f"warning: resuming a run trained on {state['world_size']} processes with {run.world_size}; "
            "data order after the resume differs from an uninterrupted run"
        )
    run.plugin_manager.hook.lgvq_load_checkpoint(run=run, state=state)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def _collate():
    from lgvq_core.data.base import collate

    return collate


def _train_loader(run: RunContext) -> tuple[DataLoader, TrainKeySampler]:
    train = run.config.train
    sampler = TrainKeySampler(run.train_data, run.config.run.seed, run.rank, run.world_size)
    if len(sampler) < train.batch_size:
        raise DataError(
            f"the training split has {len(run.train_data)} items, fewer than one global batch "
            f"({train.batch_size} x {run.world_size} processes); lower train.batch_size"
        )
    loader = DataLoader(
        run.train_data,
        batch_size=train.batch_size,
        sampler=sampler,
        num_workers=train.num_workers,
        collate_fn=_collate(),
        drop_last=True,
        pin_memory=run.device.type == "cuda",
        # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
        # run (which creates one mid-epoch) would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(run.config.run.seed),
    )
    return loader, sampler


def _val_loader(run: RunContext) -> DataLoader:
    return DataLoader(
        run.val_data,
        batch_size=run.config.train.batch_size,
        sampler=ShardSampler(len(run.val_data), run.rank, run.world_size),
        num_workers=run.config.train.num_workers,
        collate_fn=_collate(),
    )


class _BatchStream:
    """Endless micro-batches in (epoch, position) order, resumable from ``batches_seen``."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.loader, self.sampler = _train_loader(run)
        self.per_epoch = len(self.sampler) // run.config.train.batch_size
        self.iterator = None

    def _start(self) -> None:
        epoch, offset = divmod(self.run.batches_seen, self.per_epoch)
        self.sampler.set_position(epoch, offset * self.run.config.train.batch_size)
        self.iterator = iter(self.loader)

    def next(self) -> dict[str, Any]:
        while True:
            if self.iterator is None:
                self._start()
            try:
                batch = next(self.iterator)
            except StopIteration:
                self.iterator = None
                continue
            self.run.batches_seen += 1
            if self.run.batches_seen % self.per_epoch == 0:
                self.iterator = None  # the epoch is complete; the next one reshuffles
            self.run.skipped_items.extend(batch.get("skipped", []))
            if batch["image"] is None:
                continue  # every item of the batch was skipped (and reported)
            batch["image"] = batch["image"].to(self.run.device, non_blocking=True)
            return batch


# ------------------------------------------------------------------------------------------
# validation and samples
# ------------------------------------------------------------------------------------------
def _psnr(images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR on [0, 1]."""
    x = images.float().clamp(-1, 1).add(1).div(2)
    y = recon.float().clamp(-1, 1).add(1).div(2)
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def validate(run: RunContext, loader: DataLoader) -> dict[str, float]:
    """Reconstruction and quantizer losses, PSNR and codebook usage over the validation split.

    The LG losses are skipped in validation, as in the official code.
    """
    run.model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64, device=run.device)
    codebook_size = run.model.quantizer.codebook_size
    code_counts = torch.zeros(codebook_size, dtype=torch.float64, device=run.device)
    limit = run.config.train.val_batches
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        if batch["image"] is None:
            continue
        images = batch["image"].to(run.device)
        with run.autocast():
            output = run.model(images)
            terms = dict(run.model.generator_loss(images, output, run.step, None))
        terms["loss"] = terms.pop("total")
        terms["psnr"] = _psnr(images, output.recon).mean()
        n = images.shape[0]
        for name, value in terms.items():
            value = value.detach().double() * n
            sums[name] = sums[name] + value if name in sums else value
        count += n
        code_counts += torch.bincount(output.indices.flatten(), minlength=codebook_size)[:codebook_size].double()
    run.model.train()
    names = sorted(sums)
    if run.dist.enabled:
        import torch.distributed as dist

        names = distr.broadcast_object(names, run.dist)  # a rank with no items has no names
        zero = torch.zeros((), dtype=torch.float64, device=run.device)
        packed = torch.stack([sums.get(n, zero) for n in names] + [count])
        dist.all_reduce(packed)
        dist.all_reduce(code_counts)
        sums = dict(zip(names, packed[:-1], strict=True))
        count = packed[-1]
    if count.item() == 0:
        return {}
    metrics = {name: float(sums[name] / count) for name in names}
    usage = usage_from_counts(code_counts)
    metrics["codebook_usage"] = usage["usage"]
    metrics["perplexity"] = usage["perplexity"]
    return metrics


@torch.no_grad()
def save_samples(run: RunContext, images: torch.Tensor) -> None:
    if not run.is_main:
        return
    run.model.eval()
    with run.autocast():
        recon = run.model(images.to(run.device)).recon
    run.model.train()
    save_reconstruction_grid(images, recon, run.run_dir / "samples" / f"step-{run.step:07d}.png")


# ------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------
class _SignalGuard:
    """SIGINT/SIGTERM request a clean stop (``last`` is saved); a second SIGINT aborts."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.previous: dict[int, Any] = {}
        self.received = 0

    def _handle(self, signum, frame) -> None:
        self.received += 1
        if self.received > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.run.request_stop("signal")
        self.run.log(f"received {signal.Signals(signum).name}: saving checkpoints/last and stopping")

    def __enter__(self) -> _SignalGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _log_record(run: RunContext, metrics: dict[str, float], started: float, images_per_step: int) -> dict[str, Any]:
    record: dict[str, Any] = {"step": run.step, "split": "train"}
    record.update(metrics)
    record["lr"] = run.lr
    record["epoch"] = run.batches_seen // max(1, len(run.train_data) // (run.config.train.batch_size * run.world_size))
    record["images_seen"] = run.step * images_per_step
    record["elapsed_s"] = round(time.perf_counter() - started, 3)
    return record


def _loop(run: RunContext, metrics_writer: MetricsWriter | None) -> RunResult:
    config = run.config
    train = config.train
    stream = _BatchStream(run)
    val_loader = _val_loader(run)
    sample_images = _first_images(run, 8)
    images_per_step = train.batch_size * train.accumulate * run.world_size
    progress = Progress(
        total=train.max_steps,
        start=run.step,
        images_per_step=images_per_step,
        mode=config.run.progress,
        log_every=config.run.log_every,
        enabled=run.is_main,
    )
    started = time.perf_counter()
    start_step = run.step
    last_metrics: dict[str, float] = {}
    val_metrics: dict[str, float] = {}
    last_saved_step = run.step
    hook = run.plugin_manager.hook
    hook.lgvq_train_start(run=run)
    try:
        with _SignalGuard(run):
            while run.step < train.max_steps and run.stop_reason is None:
                micro_batches = [stream.next() for _ in range(train.accumulate)]
                metrics = hook.lgvq_train_step(run=run, batch=micro_batches)
                if metrics is None:
                    raise LgvqError("no plugin answered lgvq_train_step")
                run.step += 1
                if run.last_output_stats:  # one device sync for every statistic
                    names = list(run.last_output_stats)
                    values = torch.stack([run.last_output_stats[n].float().reshape(()) for n in names]).tolist()
                    metrics.update(zip(names, values, strict=True))
                hook.lgvq_train_batch_end(run=run, metrics=metrics)
                if run.step % config.run.log_every == 0 or run.step == train.max_steps:
                    metrics.update(run.extra_metrics)
                    run.extra_metrics = {}
                    metrics = distr.reduce_mean(metrics, run.dist, run.device)
                    if metrics_writer is not None:
                        metrics_writer.write(_log_record(run, metrics, started, images_per_step))
                last_metrics = metrics
                progress.update(run.step, metrics)
                is_last = run.step >= train.max_steps
                if run.step % train.val_every == 0 or is_last:
                    val_metrics = _validate_and_keep_best(run, val_loader, metrics_writer, progress)
                if sample_images is not None and (run.step % train.sample_every == 0 or is_last):
                    save_samples(run, sample_images)
                if run.step % train.checkpoint_every == 0 and not is_last:
                    save(run, ["last"])
                    last_saved_step = run.step
                if distr.any_rank(run.stop_reason is not None, run.dist, run.device) and run.stop_reason is None:
                    run.stop_reason = "signal"
    except BaseException as exc:
        progress.close()
        if isinstance(exc, KeyboardInterrupt):
            raise
        hook.lgvq_exception(run=run, exc=exc)
        raise
    progress.close()
    if run.stop_reason is None:
        run.stop_reason = "max_steps"
    if run.step != last_saved_step or not (run.run_dir / "checkpoints" / "last.json").exists():
        save(run, ["last"])
    hook.lgvq_train_end(run=run)
    seconds = time.perf_counter() - started
    done = run.step - start_step
    return RunResult(
        run_dir=run.run_dir,
        step=run.step,
        stop_reason=run.stop_reason,
        final_metrics=last_metrics,
        images_per_second=done * images_per_step / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        val_metrics=val_metrics,
        skipped_items=list(run.skipped_items),
    )


def _validate_and_keep_best(run, loader, metrics_writer, progress) -> dict[str, float]:
    metrics = validate(run, loader)
    run.plugin_manager.hook.lgvq_validation_end(run=run, metrics=metrics)
    if metrics_writer is not None and metrics:
        metrics_writer.write({"step": run.step, "split": "val", **metrics})
    if metrics:
        progress.write(
            f"validation @ step {run.step}: "
            + " ".join(
                f"{k} {v:.4g}"
                for k, v in metrics.items()
                if k in ("loss", "rec_loss", "psnr", "codebook_usage", "perplexity")
            )
        )
    key = run.config.train.best_metric
    value = metrics.get(key)
    if value is not None and value < run.best_value:
        run.best_value = value
        save(run, ["best"], metrics)
    elif value is None and metrics:
        progress.write(f"warning: train.best_metric {key!r} is not a validation metric ({', '.join(metrics)})")
    return metrics


def _first_images(run: RunContext, count: int) -> torch.Tensor | None:
    if not run.is_main or len(run.val_data) == 0:
        return None
    from lgvq_core.data.base import collate

    items = [run.val_data[i] for i in range(min(count, len(run.val_data)))]
    return collate(items)["image"]


# ------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------
def train(
    loaded: LoadedRunFile,
    source_text: str = "",
    overrides: list[str] | None = None,
    resume_dir: str | Path | None = None,
) -> RunResult:
    """Train from a validated run file; with ``resume_dir``, continue that run from ``last``."""
    config = loaded.config
    torch.manual_seed(config.run.seed)
    run = build_run(loaded, overrides)
    try:
        for warning in loaded.warnings:
            run.log(str(warning))
        if resume_dir is not None:
            run.run_dir = Path(resume_dir)
        elif run.is_main:
            run.run_dir = create_run_dir(config.run.output_dir, config.run.name)
        run.run_dir = Path(distr.broadcast_object(str(run.run_dir) if run.run_dir else None, run.dist))

        if run.text_cache is not None and run.text_cache.mode != "off":
            captions = sorted(set(run.train_data.all_captions()))
            run.log(f"encoding {len(captions)} training captions once (text feature cache: {run.text_cache.mode})")
            run.text_cache.warm(captions)

        if resume_dir is not None:
            restore(run, run.run_dir)
            run.log(f"resumed {run.run_dir} at step {run.step}")

        metrics_writer = None
        if run.is_main:
            from lgvq_core.cli import plugins_report

            plugins = plugins_report()
            plugins["components"] = _used_components(config)
            write_run_files(
                run.run_dir,
                source_text,
                config,
                run.overrides,
                run.lr,
                plugins,
                environment_report(run.device, run.world_size),
                keep_config=resume_dir is not None,
            )
            metrics_writer = MetricsWriter(run.run_dir / "metrics.jsonl")
            if resume_dir is not None:
                metrics_writer.truncate_after(run.step)
            run.log(f"run directory: {run.run_dir}  (lr {run.lr:.3g}, {run.world_size} process(es), {run.device})")

        callbacks = _register_callbacks(run)
        try:
            result = _loop(run, metrics_writer)
        finally:
            for plugin in callbacks:
                run.plugin_manager.unregister(plugin)
        if run.skipped_items:
            _report_skipped(run)
        if run.is_main and config.tasks and result.stop_reason == "max_steps":
            from lgvq_core.runner.evaluate import evaluate_in_process

            evaluate_in_process(run)
        return result
    finally:
        distr.shutdown_distributed()


def _report_skipped(run: RunContext) -> None:
    """One line per unreadable item (an item skipped in several epochs is listed once)."""
    counts: dict[int, int] = {}
    messages: dict[int, str] = {}
    for index, message in run.skipped_items:
        counts[index] = counts.get(index, 0) + 1
        messages[index] = message
    run.log(f"skipped {len(counts)} unreadable item(s) {len(run.skipped_items)} time(s) (train.skip_bad_items = true):")
    for index in sorted(counts)[:20]:
        run.log(f"  item {index} ({counts[index]}x): {messages[index]}")
    if len(counts) > 20:
        run.log(f"  ... and {len(counts) - 20} more")


def _used_components(config) -> list[dict[str, Any]]:
    registry = get_registry()
    used = [("backbone", config.model.backbone), ("quantizer", config.model.quantizer), ("dataset", config.data)]
    if config.text_encoder is not None:
        used.append(("text_encoder", config.text_encoder))
    used += [("alignment_loss", c) for c in config.alignment]
    used += [("task", c) for c in config.tasks]
    used += [("callback", c) for c in config.callbacks]
    records = []
    for kind, component in used:
        entry = registry.get(kind, component.type)
        records.append(
            {
                "kind": kind,
                "name": entry.name,
                "plugin": entry.plugin,
                "distribution": entry.distribution,
                "version": entry.version,
            }
        )
    return records


def _register_callbacks(run: RunContext) -> list[Any]:
    registry = get_registry()
    plugins = []
    for i, component in enumerate(run.config.callbacks):
        plugin = registry.build("callback", component, f"$.callbacks[{i}]", BuildContext(device=str(run.device)))
        run.plugin_manager.register(plugin, name=f"callback-{i}-{component.type}")
        plugins.append(plugin)
    return plugins


def describe_result(result: RunResult) -> str:
    terms = " ".join(
        f"{k} {v:.4g}"
        for k, v in result.final_metrics.items()
        if k == "loss" or k.endswith("_loss") or k in ("d_total",)
    )
    lines = [
        f"done: {result.step} steps ({result.stop_reason}) in {result.seconds:.1f} s, "
        f"{result.images_per_second:.1f} images/s",
        f"final losses: {terms}",
    ]
    if result.val_metrics:
        lines.append(
            "validation: "
            + " ".join(
                f"{k} {v:.4g}"
                for k, v in result.val_metrics.items()
                if k in ("rec_loss", "psnr", "codebook_usage", "perplexity")
            )
        )
    lines.append(f"run directory: {result.run_dir}")
    return "\n".join(lines)


__all__ = ["RunContext", "RunResult", "build_run", "describe_result", "restore", "save", "train", "validate"]
