"""example-conv reconstructs through the run's quantizer and learns through the straight-through codes."""

import pytest
import torch

from lgvq_core.api import BuildContext, build_component


@pytest.fixture
def quantizer(make_plugin_manager):
    make_plugin_manager(["core", "example-backbone"])
    return build_component("quantizer", {"type": "vq", "codebook_size": 16, "dim": 8})


@pytest.mark.parametrize(("stages", "latent"), [(1, 16), (2, 8), (3, 4)])
def test_latents_are_image_size_over_two_to_the_stages(quantizer, stages, latent):
    model = build_component(
        "backbone", {"type": "example-conv", "channels": 4, "stages": stages}, context=BuildContext(quantizer=quantizer)
    )

    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)

    assert model.downsample == 2**stages
    assert out.quant.shape == (2, 8, latent, latent)
    assert out.recon.shape == (2, 3, 32, 32)


def test_the_loss_option_picks_the_pixel_loss(quantizer):
    images = torch.zeros(1, 3, 8, 8)
    mse = build_component(
        "backbone", {"type": "example-conv", "channels": 4, "stages": 1}, context=BuildContext(quantizer=quantizer)
    )
    l1 = build_component(
        "backbone",
        {"type": "example-conv", "channels": 4, "stages": 1, "loss": "l1"},
        context=BuildContext(quantizer=quantizer),
    )
    out = mse(images)

    assert torch.allclose(mse.generator_loss(images, out, 0, None)["rec_loss"], out.recon.pow(2).mean())
    assert torch.allclose(l1.generator_loss(images, out, 0, None)["rec_loss"], out.recon.abs().mean())


def test_the_encoder_gets_gradient_through_the_quantizer(quantizer):
    model = build_component(
        "backbone", {"type": "example-conv", "channels": 4, "stages": 1}, context=BuildContext(quantizer=quantizer)
    )
    images = torch.rand(2, 3, 8, 8) * 2 - 1

    model.generator_loss(images, model(images), 0, None)["total"].backward()

    assert model.encoder[0].weight.grad is not None
    assert model.encoder[0].weight.grad.abs().sum() > 0


def test_it_refuses_to_build_without_a_quantizer(quantizer):
    with pytest.raises(ValueError, match=r"example-conv needs the run's quantizer"):
        build_component("backbone", {"type": "example-conv"}, context=BuildContext())
