"""The `vqvae` backbone (docs/method.md: VQ-VAE)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lgvq_backbones.vqvae.config import VQVAEConfig
from lgvq_backbones.vqvae.model import VQVAE, ResidualBlock
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError
from lgvq_core.quantizers.vq import VectorQuantizer
from lgvq_core.registry import build, get_spec

TINY = {"type": "vqvae", "hidden": 16, "residual_hidden": 8, "residual_blocks": 2, "downsample": 4}


def tiny_vqvae(**overrides) -> VQVAE:
    quantizer = build("quantizer", {"type": "vq", "codebook_size": 32, "dim": 8})
    return build("backbone", {**TINY, **overrides}, context=BuildContext(image_size=32, quantizer=quantizer))


def images(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_registry_builds_vqvae_with_the_quantizer_from_the_context():
    model = tiny_vqvae()
    assert isinstance(model, VQVAE)
    assert isinstance(model.quantizer, VectorQuantizer)
    assert (model.code_dim, model.downsample) == (8, 4)


def test_default_quantizer_is_vq_with_commitment_placement_k1024_d256():
    spec = get_spec("backbone", "vqvae")
    assert dict(spec.default_quantizer) == {
        "type": "vq",
        "beta_placement": "commitment",
        "codebook_size": 1024,
        "dim": 256,
    }


@pytest.mark.parametrize("downsample", [2, 4, 16])
def test_forward_shapes_follow_the_downsampling_factor(downsample):
    model = tiny_vqvae(downsample=downsample)
    x = images()
    out = model(x)
    side = 32 // downsample
    assert out.recon.shape == x.shape
    assert out.quant.shape == (2, 8, side, side)
    assert out.indices.shape == (2, side, side)
    assert out.quantizer_loss.dim() == 0


def test_encoder_has_one_4x4_stride_2_conv_per_factor_two_and_the_decoder_mirrors_it():
    model = tiny_vqvae(downsample=16)
    strided = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in strided] == [
        (3, 8, (4, 4)),
        (8, 16, (4, 4)),
        (16, 16, (4, 4)),
        (16, 16, (4, 4)),
    ]
    transposed = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in transposed] == [
        (16, 16, (2, 2)),
        (16, 16, (2, 2)),
        (16, 8, (2, 2)),
        (8, 3, (2, 2)),
    ]
    blocks = [m for m in model.encoder.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2
    assert (blocks[0].conv3.kernel_size, blocks[0].conv1.kernel_size) == ((3, 3), (1, 1))
    assert model.encoder.to_codes.out_channels == 8 and model.encoder.to_codes.kernel_size == (1, 1)


def test_residual_block_is_x_plus_conv1x1_relu_conv3x3_relu():
    block = ResidualBlock(4, 3)
    x = torch.randn(1, 4, 5, 5)
    expected = x + block.conv1(F.relu(block.conv3(F.relu(x))))
    torch.testing.assert_close(block(x), expected)


def test_generator_loss_is_mse_over_data_variance_plus_the_quantizer_loss():
    model = tiny_vqvae(data_variance=0.5)
    x = images()
    out = model(x)
    terms = model.generator_loss(x, out, step=0, discriminator=None)
    assert set(terms) == {"rec_loss", "quantizer_loss", "total"}
    torch.testing.assert_close(terms["rec_loss"], F.mse_loss(out.recon, x) / 0.5)
    torch.testing.assert_close(terms["total"], terms["rec_loss"] + out.quantizer_loss)


def test_backward_reaches_encoder_decoder_and_codebook():
    model = tiny_vqvae()
    x = images()
    model.generator_loss(x, model(x), 0, None)["total"].backward()
    assert model.encoder.strided[0].weight.grad.abs().sum() > 0
    assert model.decoder.conv.weight.grad.abs().sum() > 0
    assert model.quantizer.embedding.weight.grad.abs().sum() > 0


def test_vqvae_has_no_discriminator():
    model = tiny_vqvae()
    assert model.make_discriminator() is None
    assert not model.discriminator_active(10**9)


def test_decode_indices_reproduces_the_reconstruction():
    model = tiny_vqvae().eval()
    x = images()
    out = model(x)
    torch.testing.assert_close(model.decode_indices(out.indices), out.recon, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"downsample": 12}, "$.downsample: must be a power of 2"),
        ({"downsample": 1}, "$.downsample: must be a power of 2 and at least 2"),
        ({"hidden": 15}, "$.hidden: must be even"),
        ({"data_variance": 0.0}, "$.data_variance: must be > 0"),
        ({"residual_blocks": -1}, "$.residual_blocks: must be >= 0"),
    ],
)
def test_bad_keys_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        tiny_vqvae(**overrides)
    assert message in str(caught.value)


def test_missing_quantizer_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a quantizer"):
        build("backbone", TINY, context=BuildContext(image_size=32))


def test_image_size_not_divisible_by_the_downsampling_is_reported():
    quantizer = build("quantizer", {"type": "vq", "codebook_size": 8, "dim": 4})
    with pytest.raises(ConfigError, match="does not divide the image size 36"):
        build("backbone", {**TINY, "downsample": 8}, context=BuildContext(image_size=36, quantizer=quantizer))
    run = SimpleNamespace(data=SimpleNamespace(config=SimpleNamespace(image_size=36)))
    problems = list(VQVAEConfig(downsample=8).cross_check(run, "$.model.backbone"))
    assert [p.path for p in problems] == ["$.model.backbone.downsample"]
    assert "36/8 is not an integer" in problems[0].message
    assert list(VQVAEConfig(downsample=4).cross_check(run, "$.model.backbone")) == []
