"""``train.init_from``: a new tokenizer run starts from another run's weights (fine-tuning).

Loaded on every rank before DDP wraps the model and before the optimizers exist: the tokenizer
always, the discriminator when both runs have one. Strict by key and shape, with errors naming the
key; never the optimizer state, the step or the RNG. A resumed run does not read init_from at all:
its weights come from its own ``last`` checkpoint (:func:`lgvq_core.runner.state.restore`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from lgvq_core.errors import CheckpointError
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner.load import read_checkpoint


def _check(module: nn.Module, weights: dict, prefix: str, source: Path) -> None:
    expected = module.state_dict()
    problems = [
        f"{prefix}.{key}: {tuple(value.shape)} in {source.name}, {tuple(expected[key].shape)} in this run's model"
        for key, value in weights.items()
        if key in expected and hasattr(value, "shape") and tuple(value.shape) != tuple(expected[key].shape)
    ]
    missing = [f"{prefix}.{k}" for k in expected if k not in weights]
    unexpected = [f"{prefix}.{k}" for k in weights if k not in expected]
    if missing:
        problems.append(f"missing in the checkpoint: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"not in this run's model: {', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''}")
    if problems:
        raise CheckpointError(
            f"$.train.init_from: the {prefix} weights of {source} do not fit the model of this run file ("
            + "; ".join(problems[:5])
            + "); give [model] the backbone and quantizer of the init_from run (its resolved.toml)"
        )


def apply_init_from(train, modules: dict[str, nn.Module | None], log: Callable[[str], None]) -> None:
    """Load ``train.init_from``'s ``train.init_checkpoint`` into ``modules`` (``tokenizer``, ``discriminator``)."""
    if train.init_from is None:
        return
    read = read_checkpoint(Path(train.init_from).expanduser(), train.init_checkpoint, log)
    extra = read.state.get("extra_states", {})
    loaded = []
    for prefix, module in modules.items():
        if module is None:
            continue
        weights = {**ckpt.split_tensors(read.tensors, prefix), **ckpt.split_tensors(extra, prefix)}
        if not weights:
            if prefix == "tokenizer":
                raise CheckpointError(
                    f"$.train.init_from: {read.path} holds no tokenizer weights; give a tokenizer run directory"
                )
            log(f"init_from: {read.path} has no {prefix}; this run's {prefix} starts from its initialisation")
            continue
        _check(module, weights, prefix, read.path)
        module.load_state_dict(weights, strict=True)
        loaded.append(prefix)
    log(
        f"init_from: {' and '.join(loaded)} weights from {read.path} (step {read.step}); "
        "optimizers, step and data order start fresh"
    )
