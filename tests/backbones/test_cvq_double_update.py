"""cvq's official double update: the discriminator pass re-runs the tokenizer after the generator update.

The official LG_cvq runs the forward in train mode in both optimizer passes of a batch, so CVQ's usage
EMA decays twice and dead codes are re-anchored twice, the second time on features of the updated
encoder, and the discriminator trains on that second pass's reconstructions.
"""

from __future__ import annotations

import contextlib
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lgvq_backbones.cvq.config import CVQConfig
from lgvq_backbones.cvq.quantizer import CVQQuantizer, build_cvq_quantizer
from lgvq_core.runner.step import DiscriminatorModule, GeneratorModule, run_train_step
from lgvq_core.tokenizer import Tokenizer

DECAY = 0.99


class TinyCVQTokenizer(Tokenizer):
    """1×1-conv encoder and decoder around a CVQ quantizer; L1 reconstruction + quantizer loss."""

    code_dim = 2
    downsample = 1

    def __init__(self, update_in_discriminator_pass: bool, disc_start: int = 0) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 2, 1)
        self.quantizer = CVQQuantizer(
            4, 2, anchor="closest", update_in_discriminator_pass=update_in_discriminator_pass, decay=DECAY
        )
        self.decoder = nn.Conv2d(2, 3, 1)
        self.disc_start = disc_start
        self.seen_by_discriminator: list[torch.Tensor] = []

    def encode(self, images):
        return self.encoder(images)

    def decode(self, quant):
        return self.decoder(quant)

    def generator_loss(self, images, output, step, discriminator):
        total = (images - output.recon).abs().mean() + output.quantizer_loss
        return {"total": total}

    def discriminator_loss(self, images, recon, step, discriminator):
        self.seen_by_discriminator.append(recon.detach().clone())
        return {"total": F.softplus(discriminator(recon)).mean() + F.softplus(-discriminator(images)).mean()}

    def discriminator_active(self, step):
        return step >= self.disc_start


def tiny_run(tokenizer: TinyCVQTokenizer) -> SimpleNamespace:
    discriminator = nn.Conv2d(3, 1, 1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return SimpleNamespace(
        model=tokenizer,
        alignment=None,
        discriminator=discriminator,
        model_module=GeneratorModule(tokenizer, None),
        discriminator_module=DiscriminatorModule(tokenizer, discriminator),
        optimizers=SimpleNamespace(
            model=torch.optim.SGD(tokenizer.parameters(), lr=0.5),
            discriminator=torch.optim.SGD(discriminator.parameters(), lr=0.5),
        ),
        scalers=SimpleNamespace(model=scaler, discriminator=scaler),
        model_parameters=list(tokenizer.parameters()),
        discriminator_parameters=list(discriminator.parameters()),
        config=SimpleNamespace(
            train=SimpleNamespace(grad_clip=None, warmup_steps=0, lr_schedule="constant"),
            run=SimpleNamespace(channels_last=False),
        ),
        autocast=contextlib.nullcontext,
        step=0,
    )


def fractions(indices: torch.Tensor) -> torch.Tensor:
    return torch.bincount(indices.flatten(), minlength=4).float() / indices.numel()


def by_hand(tokenizer: TinyCVQTokenizer, images: torch.Tensor):
    """The official order on a copy: generator forward, backward, SGD step, then a second train-mode forward."""
    reference = copy.deepcopy(tokenizer)
    first = reference(images)
    reference.generator_loss(images, first, 0, None)["total"].backward()
    with torch.no_grad():
        for parameter in reference.parameters():
            if parameter.grad is not None:
                parameter -= 0.5 * parameter.grad
        second = reference(images)
    return reference, first, second


def test_official_default_updates_cvq_twice_and_the_discriminator_sees_the_updated_generator():
    assert CVQConfig().update_in_discriminator_pass
    assert build_cvq_quantizer(CVQConfig(codebook_size=4, dim=2)).update_in_discriminator_pass
    torch.manual_seed(0)
    tokenizer = TinyCVQTokenizer(update_in_discriminator_pass=True)
    images = torch.randn(2, 3, 3, 3)
    reference, first, second = by_hand(tokenizer, images)
    assert not torch.allclose(first.recon, second.recon)  # the generator update changed the reconstructions

    run_train_step(tiny_run(tokenizer), [{"image": images, "caption": None}])

    # p = gamma * (1 - gamma) f1 + (1 - gamma) f2: two EMA steps, f2 from the updated encoder
    expected_usage = DECAY * (1 - DECAY) * fractions(first.indices) + (1 - DECAY) * fractions(second.indices)
    torch.testing.assert_close(tokenizer.quantizer.code_usage, expected_usage)
    torch.testing.assert_close(tokenizer.quantizer.code_usage, reference.quantizer.code_usage)
    torch.testing.assert_close(tokenizer.quantizer.embedding.weight, reference.quantizer.embedding.weight)
    (seen,) = tokenizer.seen_by_discriminator
    torch.testing.assert_close(seen, second.recon)


def test_one_update_per_batch_when_switched_off():
    torch.manual_seed(0)
    tokenizer = TinyCVQTokenizer(update_in_discriminator_pass=False)
    images = torch.randn(2, 3, 3, 3)
    _, first, _ = by_hand(tokenizer, images)

    run_train_step(tiny_run(tokenizer), [{"image": images, "caption": None}])

    torch.testing.assert_close(tokenizer.quantizer.code_usage, (1 - DECAY) * fractions(first.indices))
    (seen,) = tokenizer.seen_by_discriminator
    torch.testing.assert_close(seen, first.recon)  # the generator pass's reconstructions, detached


def test_the_second_update_happens_before_disc_start_too():
    """The official discriminator pass runs on every batch; before disc_start only its loss is zero."""
    torch.manual_seed(0)
    tokenizer = TinyCVQTokenizer(update_in_discriminator_pass=True, disc_start=10)
    images = torch.randn(2, 3, 3, 3)
    _, first, second = by_hand(tokenizer, images)
    run = tiny_run(tokenizer)
    disc_before = copy.deepcopy(run.discriminator.state_dict())

    run_train_step(run, [{"image": images, "caption": None}])

    expected_usage = DECAY * (1 - DECAY) * fractions(first.indices) + (1 - DECAY) * fractions(second.indices)
    torch.testing.assert_close(tokenizer.quantizer.code_usage, expected_usage)
    assert tokenizer.seen_by_discriminator == []
    for name, value in run.discriminator.state_dict().items():
        assert torch.equal(value, disc_before[name]), name


@pytest.mark.parametrize("flag", [True, False])
def test_without_a_discriminator_there_is_one_pass(flag):
    torch.manual_seed(0)
    tokenizer = TinyCVQTokenizer(update_in_discriminator_pass=flag)
    images = torch.randn(2, 3, 3, 3)
    _, first, _ = by_hand(tokenizer, images)
    run = tiny_run(tokenizer)
    run.discriminator = run.discriminator_module = None
    run.discriminator_parameters = []

    run_train_step(run, [{"image": images, "caption": None}])

    torch.testing.assert_close(tokenizer.quantizer.code_usage, (1 - DECAY) * fractions(first.indices))
