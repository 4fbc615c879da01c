"""The default training step: generator pass (+ alignment losses), then the discriminator pass.

The official code runs the forward pass, the text encoder and every LG loss twice per batch
(once per optimizer). Here one forward pass serves both: the generator loss (with the LG losses,
computed once) is backpropagated, and the discriminator trains on the same reconstructions,
detached. Text features come from the cache.

One consequence of the official double forward is kept as an option, because it changes training
rather than only costing time: a quantizer with state updated in train mode (CVQ's usage EMA and
re-anchoring) is updated twice per batch there, the second time after the generator update. A
quantizer whose ``update_in_discriminator_pass`` is true gets that second forward (train mode, no
gradient) in the discriminator pass, whose reconstructions the discriminator then trains on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from lgvq_core.errors import NonFiniteLossError
from lgvq_core.runner.optim import apply_lr_schedule
from lgvq_core.text_encoder import TextFeatures
from lgvq_core.tokenizer import Tokenizer, TokenizerOutput


def term_key(loss_name: str) -> str:
    """Metric key of an alignment loss: ``semantic-nce`` -> ``semantic_nce_loss``."""
    return loss_name.replace("-", "_") + "_loss"


class GeneratorModule(nn.Module):
    """Tokenizer + alignment module: one forward computes every generator loss term.

    This is the module DistributedDataParallel wraps, so gradients of the tokenizer and of the
    alignment heads are reduced together. The discriminator is passed in, not owned.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        alignment: nn.Module | None,
        text_encoder: nn.Module | None = None,
        on_quantize: Callable[[TokenizerOutput], None] | None = None,
        alignment_fp32: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.alignment = alignment
        #: Run the alignment module in fp32 outside autocast (``run.alignment_precision = "fp32"``).
        self.alignment_fp32 = alignment_fp32
        # The frozen encoder is used (masked-contextual input) but never registered: it must not
        # be in the optimizer, in DDP's buckets or in a checkpoint.
        self.__dict__["text_encoder"] = text_encoder
        self.__dict__["on_quantize"] = on_quantize

    def forward(
        self,
        images: torch.Tensor,
        text: TextFeatures | None,
        step: int,
        discriminator: nn.Module | None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        output = self.tokenizer(images)
        if self.on_quantize is not None:
            self.on_quantize(output)
        terms = dict(self.tokenizer.generator_loss(images, output, step, discriminator))
        total = terms.pop("total")
        if self.alignment is not None and text is not None:
            quant, codebook = output.quant, self.tokenizer.quantizer.codebook
            if self.alignment_fp32:
                with torch.autocast(quant.device.type, enabled=False):
                    lg_terms = self.alignment(quant.float(), text, codebook.float(), output.indices, self.text_encoder)
            else:
                lg_terms = self.alignment(quant, text, codebook, output.indices, self.text_encoder)
            total = total + self.alignment.weighted_sum(lg_terms)
            terms.update({term_key(name): value for name, value in lg_terms.items()})
        terms["loss"] = total
        return terms, output.recon


class DiscriminatorModule(nn.Module):
    """Discriminator + the backbone's discriminator loss (the module DDP wraps for that pass)."""

    def __init__(self, tokenizer: Tokenizer, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.__dict__["tokenizer"] = tokenizer  # not owned: its weights belong to GeneratorModule

    def forward(self, images: torch.Tensor, recon: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        terms = dict(self.tokenizer.discriminator_loss(images, recon, step, self.discriminator))
        terms["d_total"] = terms.pop("total")
        return terms


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """Temporarily stop gradients into ``module`` (the discriminator during the generator pass)."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def no_sync(module: nn.Module, skip_sync: bool):
    """DDP's ``no_sync`` for all but the last micro-batch of an accumulated step."""
    if skip_sync and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first NaN/Inf term (one device sync)."""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
    if bool(torch.isfinite(values).all()):
        return
    for name, value in zip(terms, values.tolist(), strict=True):
        if not math.isfinite(value):
            raise NonFiniteLossError(step=step, term=name, value=value)


def step_optimizer(optimizer, scaler, parameters, grad_clip) -> None:
    """Unscale and clip (when ``grad_clip`` is set), step, update the scaler."""
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def forwards_in_discriminator_pass(run) -> bool:
    """Whether the discriminator pass re-runs the tokenizer, as the official two-optimizer loop does.

    Only a backbone with a discriminator has that pass, and only a quantizer that asks for it
    (``update_in_discriminator_pass``, CVQ's official default) gets the second forward. The official
    discriminator pass runs on every batch, before ``disc_start`` too (its loss is then zero).
    """
    quantizer = getattr(run.model, "quantizer", None)
    return run.discriminator is not None and bool(getattr(quantizer, "update_in_discriminator_pass", False))


def run_train_step(run, micro_batches: list[dict]) -> dict[str, float]:
    """One optimizer step over ``train.accumulate`` micro-batches; returns averaged loss terms.

    Per micro-batch: the generator pass (forward, backward), then the discriminator pass; both
    optimizers step after the last one. With a second forward in the discriminator pass the
    generator steps earlier, right after the last micro-batch's generator backward, as in a
    PyTorch Lightning 1.x loop with two optimizers: that second forward sees the updated generator.
    """
    optimizers = run.optimizers
    apply_lr_schedule(run)
    disc_active = run.discriminator is not None and run.model.discriminator_active(run.step)
    second_forward = forwards_in_discriminator_pass(run)
    optimizers.model.zero_grad(set_to_none=True)
    if disc_active:
        optimizers.discriminator.zero_grad(set_to_none=True)
    count = len(micro_batches)
    grad_clip = run.config.train.grad_clip
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        last = i == count - 1
        images = batch["image"]
        if run.config.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        text = run.text_features(batch["caption"]) if run.alignment is not None else None
        with no_sync(run.model_module, not last), frozen(run.discriminator):
            with run.autocast():
                terms, recon = run.model_module(images, text, run.step, run.discriminator)
            check_finite(terms, run.step + 1)
            run.scalers.model.scale(terms["loss"] / count).backward()
        if last and second_forward:
            step_optimizer(optimizers.model, run.scalers.model, run.model_parameters, grad_clip)
        if second_forward:
            with torch.no_grad(), run.autocast():
                recon = run.model(images).recon  # train mode: the quantizer updates its state again
        if disc_active:
            with no_sync(run.discriminator_module, not last):
                with run.autocast():
                    d_terms = run.discriminator_module(images, recon.detach(), run.step)
                check_finite(d_terms, run.step + 1)
                run.scalers.discriminator.scale(d_terms["d_total"] / count).backward()
            terms.update(d_terms)
        for name, value in terms.items():
            value = value.detach().float()
            sums[name] = sums[name] + value if name in sums else value
    if not second_forward:
        step_optimizer(optimizers.model, run.scalers.model, run.model_parameters, grad_clip)
    if disc_active:
        step_optimizer(optimizers.discriminator, run.scalers.discriminator, run.discriminator_parameters, grad_clip)
    names = list(sums)
    values = (torch.stack([sums[n] for n in names]) / count).tolist()
    return dict(zip(names, values, strict=True))
