"""A downstream run: a model trained on the frozen codes of a trained tokenizer ("stage 2"), its
kind and its builder.

:func:`build_downstream_run` loads the tokenizer run's checkpoint frozen (it is never trained and
never saved again), encodes each split once into the code cache, builds the model from
``[downstream]`` and returns a :class:`~lgvq_core.runner.context.RunContext` whose ``run_kind`` is
:data:`DOWNSTREAM`. From there the run goes through the same loop as a tokenizer run: progress,
metrics.jsonl, atomic checkpoints, exact resume, signals, the NaN stop, DDP, precision. The model
only supplies ``training_loss`` and ``param_groups`` (see :mod:`lgvq_core.downstream`).
:func:`load_downstream_run` rebuilds a finished one from its run directory (``lgvq eval``,
``lgvq sample``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.config.schema import DownstreamRunFile
from lgvq_core.context import BuildContext
from lgvq_core.data.codes import CodeDataset
from lgvq_core.downstream import FrozenTokenizer
from lgvq_core.errors import DataError, RunDirError
from lgvq_core.registry import get_registry
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner import distributed as distr
from lgvq_core.runner import optim as optim_module
from lgvq_core.runner.batches import to_device
from lgvq_core.runner.context import DownstreamRunContext, RunContext
from lgvq_core.runner.downstream import (
    ConditionCodes,
    cached_codes,
    load_frozen_tokenizer,
    model_inputs,
    needs_text,
    validate_downstream,
)
from lgvq_core.runner.downstream_step import run_downstream_step
from lgvq_core.runner.generate import generates, save_training_samples
from lgvq_core.runner.kinds import RunKind
from lgvq_core.runner.load import build_text_encoder, read_checkpoint, read_run_file


class DownstreamKind(RunKind):
    name = "downstream"

    def saved_modules(self, run: RunContext) -> dict[str, nn.Module | None]:
        """The downstream model alone (never the frozen tokenizer)."""
        return {"downstream": run.model}

    def train_step(self, run: RunContext, batch: list[Any]) -> dict[str, float]:
        return run_downstream_step(run, batch)

    def make_optimizers(self, run: RunContext) -> optim_module.Optimizers:
        return optim_module.downstream_optimizers(run)

    def validate(self, run: RunContext, loader: Any) -> dict[str, float]:
        return validate_downstream(run, loader)

    def probe_items(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The collated items: codes, captions, conditions."""
        return batch

    def probe_terms(self, run: RunContext, probe: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The model's ``training_loss``, its random draws from a generator seeded by the run seed."""
        generator = torch.Generator(device=run.device).manual_seed(run.config.run.seed)
        return run.model.training_loss(model_inputs(run, to_device(probe, run.device), generator))

    def draws_samples(self, run: RunContext, probe: Any) -> bool:
        return generates(run)

    def save_samples(self, run: RunContext, probe: Any) -> None:
        """Images drawn from a generative model; nothing for the others."""
        if generates(run):
            save_training_samples(run)

    def uses_text(self, run: RunContext) -> bool:
        return needs_text(run)

    def trained_model(self, run: RunContext) -> Any:
        """The run itself (``downstream_run``) with its frozen tokenizer."""
        return self.task_view(run, run.tokenizer, None, run)


#: The kind of every downstream run.
DOWNSTREAM = DownstreamKind()


class DownstreamModule(nn.Module):
    """The model as DistributedDataParallel sees it: ``forward(batch)`` is ``training_loss(batch)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model.training_loss(batch)


def build_downstream_run(loaded: LoadedRunFile, overrides: list[str] | None, info, device, log) -> DownstreamRunContext:
    """Everything a downstream run needs (see the module docstring)."""
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
    run = DownstreamRunContext(
        config=config,
        loaded=loaded,
        dist=info,
        device=device,
        model=model,
        text_encoder=text_encoder,
        text_cache=text_cache,
        train_data=splits["train"],
        val_data=splits["val"],
        lr=optim_module.effective_lr(config.train, info.world_size),
        overrides=list(overrides or []),
        run_kind=DOWNSTREAM,
        tokenizer=tokenizer,
        frozen_tokenizer=frozen,
        tokenizer_identity=identity,
        condition_tokenizer_identity=condition.identity if condition is not None else {},
    )
    run.model_parameters = [p for p in model.parameters() if p.requires_grad]
    module: nn.Module = DownstreamModule(model)
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=ids)
    run.model_module = module
    return run


def load_downstream_run(
    run_dir: str | Path, checkpoint: str = "best", device: str | None = None
) -> DownstreamRunContext:
    """A downstream run rebuilt from its ``resolved.toml`` with the weights of ``checkpoint`` (eval mode)."""
    run_dir = Path(run_dir)
    loaded = read_run_file(run_dir, [f"run.device={device}"] if device else [])
    if not isinstance(loaded.config, DownstreamRunFile):
        raise RunDirError(f"{run_dir}: a tokenizer run; `lgvq sample` needs a downstream run (a [downstream] model)")
    read = read_checkpoint(run_dir, checkpoint)  # resolved once, verified against its manifest
    info = distr.DistInfo()
    torch_device = distr.resolve_device(loaded.config.run.device, info)
    run = build_downstream_run(loaded, [], info, torch_device, log=lambda message: print(message, flush=True))
    ckpt.load_module(run.model, read.tensors, "downstream", read.path, read.state.get("extra_states"))
    run.model.eval()
    run.step = read.step
    run.run_dir = run_dir
    return run
