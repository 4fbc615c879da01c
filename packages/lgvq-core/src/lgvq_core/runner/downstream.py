"""Downstream runs: a model trained on the frozen codes of a trained tokenizer ("stage 2").

:func:`build_downstream_run` loads the tokenizer run's checkpoint frozen (it is never trained and
never saved again), encodes each split once into the code cache, builds the model from
``[downstream]`` and returns a :class:`~lgvq_core.runner.context.RunContext` with
``kind = "downstream"``. From there the run goes through the same loop as a tokenizer run:
progress, metrics.jsonl, atomic checkpoints, exact resume, signals, the NaN stop, DDP, precision.
The model only supplies ``training_loss`` and ``param_groups`` (see :mod:`lgvq_core.downstream`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lgvq_core.config.describe import unstructure
from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.context import BuildContext
from lgvq_core.data.codes import CodeDataset
from lgvq_core.downstream import FrozenTokenizer
from lgvq_core.errors import DataError
from lgvq_core.registry import get_registry
from lgvq_core.runner import distributed as distr
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.load import build_text_encoder


class DownstreamModule(nn.Module):
    """The model as DistributedDataParallel sees it: ``forward(batch)`` is ``training_loss(batch)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model.training_loss(batch)


def load_frozen_tokenizer(config, device: torch.device, log, name: str = "tokenizer") -> tuple[Any, dict[str, str]]:
    """The checkpoint of the run ``[name]`` names, frozen (the tokenizer alone, see
    :mod:`lgvq_core.runner.load`), and its identity (run dir, checkpoint dir, SHA-256)."""
    from lgvq_core.runner.load import load_tokenizer_run

    section = getattr(config, name)
    trained = load_tokenizer_run(section.run_dir, section.checkpoint, device, log, sha256=section.sha256, name=name)
    identity = trained.identity()
    log(
        f"{name.replace('_', ' ')}: {identity['checkpoint']} (sha256 {identity['sha256'][:12]}..., step {trained.step})"
    )
    return trained, identity


@torch.no_grad()
def code_grid(tokenizer, dataset, device) -> tuple[int, ...] | None:
    """The code grid the tokenizer gives the dataset's items: one blank input of the first readable
    item's shape through the encoder (None when none of the first few items can be read)."""
    for index in range(min(8, len(dataset))):
        try:
            image = dataset[index].get("image")
        except DataError:
            continue
        if isinstance(image, torch.Tensor):
            break
    else:
        return None
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        blank = torch.zeros(1, *image.shape, device=device)
        return tuple(tokenizer.quantizer(tokenizer.encode(blank)).indices.shape[1:])
    finally:
        tokenizer.train(was_training)


def cached_codes(
    run_config, trained, identity, dataset, split: str, device, info, log, data_table: dict | None = None
) -> dict[str, torch.Tensor]:
    """The split's code indices from the cache, encoding them once (rank 0; the others wait).

    ``data_table`` names what ``dataset`` yields (default: the run's ``[data]`` table).
    """
    from lgvq_core.code_cache import CodeCache, Expected, cache_key, encode_split
    from lgvq_core.text_feature_cache import cache_root

    if data_table is None:
        data_table = {"type": run_config.data.type, **unstructure(run_config.data.config)}
    key = cache_key(identity["sha256"], data_table, split, run_config.codes.flip)
    cache = CodeCache(cache_root() / "codes")
    metadata = {"tokenizer": identity["checkpoint"], "sha256": identity["sha256"], "split": split}

    def encode() -> dict[str, torch.Tensor]:
        log(
            f"codes: encoding the {split} split ({len(dataset)} {data_table['type']} items) once with the frozen tokenizer"
        )
        return encode_split(trained.tokenizer, dataset, device, run_config.codes.batch_size, run_config.codes.flip)

    expected = Expected(
        items=len(dataset),
        codebook_size=int(trained.tokenizer.quantizer.codebook_size),
        flip=bool(run_config.codes.flip),
        grid=code_grid(trained.tokenizer, dataset, device),
    )
    if info.is_main:
        codes = cache.get_or_encode(key, encode, metadata, log, expected)
    distr.barrier(info)
    if not info.is_main:
        codes = cache.load(key, expected, log)
        if codes is None:
            raise DataError(f"{cache.path(key)}: rank 0 did not write the code cache")
    return codes


class ConditionCodes:
    """``[condition_tokenizer]``: a frozen mask autoencoder and the cached codes of each split's label maps.

    Each item's label map is one-hot encoded exactly as its ``segmentation-maps`` run saw them (the
    run's channel count), encoded once per split and cached under the mask tokenizer's SHA-256, the
    ``[data]`` table, the split and the flip option.
    """

    def __init__(self, config, device, info, log) -> None:
        self.config, self.device, self.info, self.log = config, device, info, log
        self.trained, self.identity = load_frozen_tokenizer(config, device, log, "condition_tokenizer")
        self.classes = self.trained.in_channels

    def codes(self, images, split: str) -> dict[str, torch.Tensor]:
        from lgvq_core.data.segmentation_maps import SegmentationMaps

        maps = SegmentationMaps(images, self.classes)
        source = {"type": self.config.data.type, **unstructure(self.config.data.config)}
        table = {"type": "segmentation-maps", "classes": self.classes, "source": source}
        return cached_codes(
            self.config, self.trained, self.identity, maps, split, self.device, self.info, self.log, table
        )

    def frozen(self, train: CodeDataset) -> FrozenTokenizer:
        quantizer = self.trained.tokenizer.quantizer
        sample = train.condition_indices
        return FrozenTokenizer(
            codebook_size=quantizer.codebook_size,
            grid=tuple(sample.shape[-2:]),
            code_dim=quantizer.codebook.shape[1],
            codebook=quantizer.codebook.detach().to(self.device),
            indices_per_position=int(sample.shape[1]) if sample.dim() == 4 else 1,
        )


def build_downstream_run(loaded: LoadedRunFile, overrides: list[str] | None, info, device, log) -> RunContext:
    """Everything a downstream run needs (see the module docstring)."""
    from lgvq_core.runner import optim as optim_module

    config = loaded.config
    registry = get_registry()
    trained, identity = load_frozen_tokenizer(config, device, log)
    tokenizer = trained.tokenizer
    base = dict(device=str(device), seed=config.run.seed, log=log, skip_bad_items=config.train.skip_bad_items)
    needed = getattr(config.downstream.config, "annotations", None)
    annotations = sorted(needed()) if callable(needed) else []
    unit = getattr(config.downstream.config, "unit", None)
    unit = unit() if callable(unit) else "image"
    condition = ConditionCodes(config, device, info, log) if config.condition_tokenizer is not None else None
    splits = {}
    for split in ("train", "val"):
        images = registry.build("dataset", config.data, "$.data", BuildContext(split=split, **base))
        codes = cached_codes(config, trained, identity, images, split, device, info, log)
        condition_codes = condition.codes(images, split) if condition is not None else None
        splits[split] = CodeDataset(
            codes, images, [a for a in annotations if a == "segmentation"], unit, condition_codes
        )
    if len(splits["train"]) == 0:
        raise DataError("the training split of [data] is empty")
    sample = splits["train"].indices
    grid = tuple(sample.shape[-2:])
    frozen = FrozenTokenizer(
        codebook_size=tokenizer.quantizer.codebook_size,
        grid=grid,
        code_dim=tokenizer.quantizer.codebook.shape[1],
        codebook=tokenizer.quantizer.codebook.detach().to(device),
        indices_per_position=int(sample.shape[1]) if sample.dim() == 4 else 1,
    )
    # The run file's [text_encoder], else the tokenizer run's (built once, here).
    text_source = config if config.text_encoder is not None else trained.config
    text_encoder, text_cache = build_text_encoder(text_source, device, log)
    torch.manual_seed(config.run.seed)
    context = BuildContext(
        frozen_tokenizer=frozen,
        text_encoder=text_encoder,
        train_data=splits["train"],
        train_captions=splits["train"].all_captions,
        condition_tokenizer=condition.frozen(splits["train"]) if condition is not None else None,
        **base,
    )
    model = registry.build("downstream", config.downstream, "$.downstream", context).to(device)
    run = RunContext(
        config=config,
        loaded=loaded,
        dist=info,
        device=device,
        model=model,
        alignment=None,
        discriminator=None,
        text_encoder=text_encoder,
        text_cache=text_cache,
        train_data=splits["train"],
        val_data=splits["val"],
        lr=optim_module.effective_lr(config.train, info.world_size),
        overrides=list(overrides or []),
        kind="downstream",
        tokenizer=tokenizer,
        frozen_tokenizer=frozen,
        tokenizer_identity=identity,
        condition_tokenizer_identity=condition.identity if condition is not None else {},
    )
    run.generator_parameters = [p for p in model.parameters() if p.requires_grad]
    module: nn.Module = DownstreamModule(model)
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=ids)
    run.generator_module = module
    return run


def needs_text(run: RunContext) -> bool:
    """Whether the model asks for text-encoder states (``uses_text`` on its config)."""
    uses = getattr(run.config.downstream.config, "uses_text", None)
    return bool(uses() if callable(uses) else uses)


def model_inputs(run: RunContext, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
    """A batch as the model's ``training_loss`` takes it: codes, text states when needed, a generator."""
    inputs = dict(batch)
    if needs_text(run):
        if run.text_cache is None:
            raise DataError("the downstream model uses text but the run has no [text_encoder]")
        features = run.text_features(batch.get("text", batch["caption"]))
        inputs["text_states"] = features.token_states
        inputs["text_pad"] = features.pad_mask
    if generator is not None:
        inputs["generator"] = generator
    return inputs


@torch.no_grad()
def validate_downstream(run: RunContext, loader) -> dict[str, float]:
    """Mean of every ``training_loss`` term over the validation split, in eval mode.

    Random draws of the loss (time steps, condition dropout) come from a generator seeded by the
    run seed, so validation neither depends on nor changes the training RNG.
    """
    from lgvq_core.runner.batches import to_device

    run.model.eval()
    generator = torch.Generator(device=run.device).manual_seed(run.config.run.seed)
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64, device=run.device)
    from lgvq_core.runner.validation import report_validation_skips

    limit = run.config.train.val_batches
    skipped: list[tuple[int, str]] = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        skipped.extend(batch.get("skipped", []))
        if not batch["index"]:
            continue
        batch = to_device(batch, run.device)
        with run.autocast():
            terms = run.model.training_loss(model_inputs(run, batch, generator))
        n = len(batch["index"])
        for name, value in terms.items():
            value = value.detach().double() * n
            sums[name] = sums[name] + value if name in sums else value
        count += n
    run.model.train()
    report_validation_skips(run, skipped)
    names = sorted(sums)
    if run.dist.enabled:
        import torch.distributed as dist

        names = distr.broadcast_object(names, run.dist)
        zero = torch.zeros((), dtype=torch.float64, device=run.device)
        packed = torch.stack([sums.get(n, zero) for n in names] + [count])
        dist.all_reduce(packed)
        sums = dict(zip(names, packed[:-1], strict=True))
        count = packed[-1]
    if count.item() == 0:
        return {}
    return {name: float(sums[name] / count) for name in names}
