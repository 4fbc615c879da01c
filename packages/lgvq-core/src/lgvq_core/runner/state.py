"""What a run checkpoint holds beyond the weights, and how a run is put back from one.

:func:`save` gathers the run's weights (never the frozen text encoder) and its state (optimizers,
scalers, RNG, data position, best value, callback state added through ``lgvq_save_checkpoint``)
and hands them to :mod:`lgvq_core.runner.checkpoint`, which writes them atomically.
:func:`restore` is the inverse; callbacks are registered before it runs, so their
``lgvq_load_checkpoint`` sees their saved state.

Only weights shown good are checkpointed (:mod:`lgvq_core.runner.guard`): a periodic checkpoint is
saved as ``pending`` (:func:`save_pending`) and becomes ``last`` once the next step computed a
finite loss from its weights (:func:`promote_pending`); the checkpoint at the end of a run is
probed first (:func:`save_final`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lgvq_core import checkpoint_files
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner import guard, pointers, rng
from lgvq_core.runner.context import RunContext


def checkpoint_tensors(run: RunContext) -> dict[str, torch.Tensor]:
    return ckpt.model_tensors(run.saved_modules(), exclude=run.text_encoder)


def checkpoint_state(run: RunContext) -> dict[str, Any]:
    # The model's optimizer and scaler are saved under "generator": the key of checkpoint format 2,
    # which predates the name (a checkpoint written before it resumes unchanged).
    state: dict[str, Any] = {
        "step": run.step,
        "batches_seen": run.batches_seen,
        "best_value": run.best_value,
        "optimizers": {"generator": run.optimizers.model.state_dict()},
        "scalers": {
            "generator": run.scalers.model.state_dict(),
            "discriminator": run.scalers.discriminator.state_dict(),
        },
        "rng": rng.rng_state(),
        "extra_states": ckpt.extra_states(run.saved_modules()),
        "world_size": run.world_size,
        "skipped_items": [[i, m] for i, m in run.skipped_items],
    }
    if run.optimizers.discriminator is not None:
        state["optimizers"]["discriminator"] = run.optimizers.discriminator.state_dict()
    return state


def save(run: RunContext, pointers: list[str], metrics: dict[str, float] | None = None) -> None:
    """Write a checkpoint on rank 0 (every rank may call it: hooks run on rank 0 only)."""
    if not run.is_main:
        return
    state = checkpoint_state(run)
    run.plugin_manager.hook.lgvq_save_checkpoint(run=run, state=state)
    info = None
    if metrics:
        info = {"metric": run.config.train.best_metric, "value": metrics.get(run.config.train.best_metric)}
    ckpt.save_checkpoint(run.run_dir / "checkpoints", run.step, checkpoint_tensors(run), state, pointers, info)


def save_pending(run: RunContext) -> None:
    """A periodic checkpoint, kept as ``pending`` until a finite loss is computed from its weights."""
    guard.check_parameters(run)
    save(run, [checkpoint_files.PENDING])


def promote_pending(run: RunContext) -> None:
    """The step just taken computed a finite loss from the pending weights: make them ``last``."""
    if run.is_main:
        pointers.promote_pending(run.run_dir / "checkpoints")


def save_final(run: RunContext, probe: torch.Tensor | dict | None) -> None:
    """``last`` at the end of a run (or on a stop request), from weights probed on ``probe``
    (validation images, or a downstream run's validation items).

    A pending checkpoint of this very step is promoted instead of written again, and ``best`` saved at
    this very step becomes ``last`` too: one folder, two pointers.
    """
    if not run.is_main:
        return
    guard.prove(run, probe)
    folder = run.run_dir / "checkpoints"
    if checkpoint_files.pending_step(folder) == run.step:
        pointers.promote_pending(folder)
        return
    if checkpoint_files.pointer_step(folder, "last") == run.step:
        return
    if run.best_saved_step == run.step and checkpoint_files.pointer_step(folder, "best") == run.step:
        pointers.share_pointer(folder, "best", ("last",))  # best was saved from these very weights and state
        return
    save(run, ["last"])


def restore(run: RunContext, run_dir: Path) -> None:
    """Load ``checkpoints/last`` into the run: weights, optimizers, scalers, RNG, position, callbacks."""
    path = ckpt.resolve_checkpoint(run_dir, "last")
    tensors, state = ckpt.load_checkpoint(path, map_location="cpu")
    for prefix, module in run.saved_modules().items():
        if module is not None:
            ckpt.load_module(module, tensors, prefix, path, state.get("extra_states"))
    try:
        run.optimizers.model.load_state_dict(state["optimizers"]["generator"])
        if run.optimizers.discriminator is not None:
            run.optimizers.discriminator.load_state_dict(state["optimizers"]["discriminator"])
    except (KeyError, ValueError) as exc:
        raise ckpt.CheckpointError(f"{path}: optimizer state does not match this run ({exc})") from None
    run.scalers.model.load_state_dict(state["scalers"]["generator"])
    run.scalers.discriminator.load_state_dict(state["scalers"]["discriminator"])
    rng.restore_rng_state(state["rng"])
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
