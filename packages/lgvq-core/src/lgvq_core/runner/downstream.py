"""Downstream runs' parts: the frozen tokenizer, the code cache per split, the model's inputs and
its validation. :mod:`lgvq_core.runner.downstream_run` builds a downstream run from them.
"""

from __future__ import annotations

from typing import Any

import torch

from lgvq_core.code_cache import CodeCache, Expected, cache_key, encode_split
from lgvq_core.config.describe import unstructure
from lgvq_core.data.codes import CodeDataset
from lgvq_core.data.segmentation_maps import SegmentationMaps
from lgvq_core.downstream import FrozenTokenizer
from lgvq_core.errors import DataError
from lgvq_core.runner import distributed as distr
from lgvq_core.runner.batches import to_device
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.load import load_tokenizer_run
from lgvq_core.runner.validation import report_validation_skips
from lgvq_core.text_feature_cache import cache_root


def load_frozen_tokenizer(config, device: torch.device, log, name: str = "tokenizer") -> tuple[Any, dict[str, str]]:
    """The checkpoint of the run ``[name]`` names, frozen (the tokenizer alone, see
    :mod:`lgvq_core.runner.load`), and its identity (run dir, checkpoint dir, SHA-256)."""
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
    run.model.eval()
    generator = torch.Generator(device=run.device).manual_seed(run.config.run.seed)
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64, device=run.device)

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
