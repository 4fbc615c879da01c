"""Optimizers (docs/method.md: VQ-GAN): a tokenizer run's two Adams with betas (0.5, 0.9), a downstream
run's AdamW, taming's linear LR scaling and the schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Optimizers:
    """The run's optimizers: ``model``'s (what the run trains; a tokenizer run's with its alignment
    heads), and a tokenizer run's ``discriminator``'s (``None`` without an adversarial loss)."""

    model: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer | None = None

    def named(self) -> list[tuple[str, torch.optim.Optimizer]]:
        """``("model", ...)`` and, when there is one, ``("discriminator", ...)``."""
        return [
            (name, o) for name, o in (("model", self.model), ("discriminator", self.discriminator)) if o is not None
        ]


def effective_lr(train, world_size: int) -> float:
    """The learning rate a run uses: ``train.lr`` if given, else taming's rule.

    ``lr = base_lr x accumulate x world_size x batch_size`` (``lr_scaling = "linear"``), e.g.
    4.5e-6 x 1 x 1 x 8 = 3.6e-5; or ``base_lr`` unchanged (``"none"``).
    """
    if train.lr is not None:
        return float(train.lr)
    if train.lr_scaling == "none":
        return float(train.base_lr)
    return float(train.base_lr) * train.accumulate * world_size * train.batch_size


def lr_factor(train, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of the run's lr.

    Linear warm-up over ``warmup_steps`` (step s gets (s + 1) / warmup_steps), then constant or a
    cosine from 1 down to ``final_lr_fraction`` at ``max_steps``. A pure function of the step, so a
    resumed run follows the same schedule with no state of its own.
    """
    warmup = train.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if train.lr_schedule == "constant":
        return 1.0
    span = max(1, train.max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = train.final_lr_fraction
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr_schedule(run) -> None:
    """Set every optimizer group's lr for the coming step (``initial_lr`` x :func:`lr_factor`).

    Does nothing on the official schedule (no warm-up, constant), so those runs never touch the groups.
    """
    train = run.config.train
    if train.warmup_steps == 0 and train.lr_schedule == "constant":
        return
    factor = lr_factor(train, run.step)
    for optimizer in (run.optimizers.model, run.optimizers.discriminator):
        if optimizer is None:
            continue
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


def implementation(train) -> dict[str, bool]:
    """Keyword arguments of ``torch.optim.Adam``/``AdamW`` for ``train.optimizer_impl``."""
    choice = getattr(train, "optimizer_impl", "auto")
    return {"auto": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[choice]


def tokenizer_optimizers(run) -> Optimizers:
    """A tokenizer run's default: Adam over tokenizer + alignment parameters, Adam over the discriminator."""
    train = run.config.train
    impl = implementation(train)
    model = torch.optim.Adam(
        run.model_parameters, lr=run.lr, betas=tuple(train.betas), weight_decay=train.weight_decay, **impl
    )
    discriminator = None
    if run.discriminator is not None:
        discriminator = torch.optim.Adam(
            run.discriminator_parameters, lr=run.lr, betas=tuple(train.betas), weight_decay=train.weight_decay, **impl
        )
    return Optimizers(model=model, discriminator=discriminator)


def downstream_optimizers(run) -> Optimizers:
    """A downstream run's default: AdamW over the model's own parameter groups (``param_groups(weight_decay)``)."""
    train = run.config.train
    groups = run.model.param_groups(train.weight_decay)
    return Optimizers(model=torch.optim.AdamW(groups, lr=run.lr, betas=tuple(train.betas), **implementation(train)))
