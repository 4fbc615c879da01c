"""Optimizers (docs/method.md: VQ-GAN): two Adams with betas (0.5, 0.9) and taming's linear LR scaling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lgvq_core.plugins import hookimpl


@dataclass
class Optimizers:
    """The run's optimizers; ``discriminator`` is ``None`` when the backbone has no adversarial loss."""

    generator: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer | None = None


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


def implementation(train) -> dict[str, bool]:
    """Keyword arguments of ``torch.optim.Adam``/``AdamW`` for ``train.optimizer_impl``."""
    choice = getattr(train, "optimizer_impl", "auto")
    return {"auto": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[choice]


@hookimpl(trylast=True)
def lgvq_make_optimizers(run):
    """Default: Adam over tokenizer + alignment parameters, Adam over the discriminator; for a
    downstream run, AdamW over the model's own parameter groups (``param_groups(weight_decay)``)."""
    train = run.config.train
    impl = implementation(train)
    if run.kind == "downstream":
        groups = run.model.param_groups(train.weight_decay)
        return Optimizers(generator=torch.optim.AdamW(groups, lr=run.lr, betas=tuple(train.betas), **impl))
    generator = torch.optim.Adam(
        run.generator_parameters, lr=run.lr, betas=tuple(train.betas), weight_decay=train.weight_decay, **impl
    )
    discriminator = None
    if run.discriminator is not None:
        discriminator = torch.optim.Adam(
            run.discriminator_parameters, lr=run.lr, betas=tuple(train.betas), weight_decay=train.weight_decay, **impl
        )
    return Optimizers(generator=generator, discriminator=discriminator)
