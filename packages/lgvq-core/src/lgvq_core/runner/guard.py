"""The NaN guard: a checkpoint holds only weights that have been shown good.

A diverging update can leave huge but finite weights: their own checkpoint looks fine, and only
the next loss is NaN. So weights count as good only when

- every parameter and buffer is finite, and
- a finite loss has been computed from them: the next training step's loss (a periodic
  checkpoint waits as ``pending`` until then, see :mod:`lgvq_core.runner.checkpoint`), the
  validation loss (``best``), or, for the checkpoint written when the run ends, :func:`probe_loss`
  on a fixed batch of validation images (a downstream run: validation codes).

A non-finite validation loss stops the run like a non-finite training loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from lgvq_core import checkpoint_files
from lgvq_core.errors import NonFiniteLossError
from lgvq_core.runner import pointers


def nonfinite_tensor(modules: dict[str, torch.nn.Module | None]) -> tuple[str, float] | None:
    """``(name, value)`` of the first parameter or buffer holding a NaN/Inf (one device sync)."""
    named = []
    for prefix, module in modules.items():
        if module is None:
            continue
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and tensor.numel() > 0:
                named.append((f"{prefix}.{name}", tensor))
    if not named:
        return None
    flags = torch.stack([torch.isfinite(t.detach()).all() for _, t in named])
    if bool(flags.all()):
        return None
    for (name, tensor), ok in zip(named, flags.tolist(), strict=True):
        if not ok:
            bad = tensor.detach()[~torch.isfinite(tensor.detach())].flatten()[0]
            return name, float(bad)
    return None  # pragma: no cover


def check_parameters(run: Any) -> None:
    """Raise :class:`NonFiniteLossError` naming a non-finite parameter or buffer."""
    found = nonfinite_tensor(run.saved_modules())  # what a checkpoint would hold
    if found is not None:
        raise NonFiniteLossError(step=run.step, term=found[0], value=found[1], what="parameter")


@torch.no_grad()
def probe_loss(run: Any, probe: torch.Tensor | dict[str, Any] | None) -> dict[str, float]:
    """The loss terms of the current weights on a fixed probe, in eval mode.

    A tokenizer run is probed with its generator loss on validation images; a downstream run with
    its model's ``training_loss`` on validation items (random draws of that loss from a generator
    seeded by the run seed). Runs inside ``torch.random.fork_rng``: the probe draws nothing from
    the run's random streams, so a run that is probed (at its end) and then extended stays exact.
    """
    if probe is None:
        return {}
    devices = [run.device] if run.device.type == "cuda" else []
    was_training = run.model.training
    with torch.random.fork_rng(devices=devices):
        run.model.eval()
        try:
            with run.autocast():
                terms = dict(run.run_kind.probe_terms(run, probe))
        finally:
            run.model.train(was_training)
    names = list(terms)
    values = torch.stack([terms[n].detach().float().reshape(()) for n in names]).tolist()
    return dict(zip(names, values, strict=True))


def prove(run: Any, probe: torch.Tensor | dict[str, Any] | None) -> None:
    """Raise :class:`NonFiniteLossError` unless the current weights are finite and give a finite loss."""
    check_parameters(run)
    for name, value in probe_loss(run, probe).items():
        if not math.isfinite(value):
            raise NonFiniteLossError(step=run.step, term=name, value=value, what="loss term (of the weights to save)")


def check_step_metrics(metrics: dict[str, float], step: int) -> None:
    """The loss a training step returned must be finite (the default step checks every term
    before its backward pass; this also covers a plugin's own ``lgvq_train_step``)."""
    value = metrics.get("loss")
    if value is not None and not math.isfinite(value):
        raise NonFiniteLossError(step=step, term="loss", value=value)


def check_validation(metrics: dict[str, float], step: int) -> None:
    """A NaN/Inf validation loss stops the run (and nothing is saved from those weights)."""
    for name, value in metrics.items():
        if (name == "loss" or name.endswith("_loss")) and not math.isfinite(value):
            raise NonFiniteLossError(step=step, term=name, value=value, what="validation loss term")


def settle_nonfinite(exc: NonFiniteLossError, checkpoint_dir: Path | None) -> NonFiniteLossError:
    """Drop the unproven pending checkpoint and name what the run kept (or that it has nothing)."""
    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return exc.keeping(None)
    pointers.discard_pending(checkpoint_dir)
    path, step = checkpoint_files.good_checkpoint(checkpoint_dir)
    return exc.keeping(path, step)
