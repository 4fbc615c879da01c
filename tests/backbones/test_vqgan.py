"""The `vqgan` backbone: taming f16 encoder/decoder, LPIPS, PatchGAN and the GAN loss (docs/method.md: VQ-GAN)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from lgvq_backbones.vqgan.adversarial import adaptive_weight, hinge_d_loss, vanilla_d_loss
from lgvq_backbones.vqgan.config import VQGANConfig
from lgvq_backbones.vqgan.discriminator import PatchDiscriminator
from lgvq_backbones.vqgan.model import VQGAN
from lgvq_core.context import BuildContext
from lgvq_core.errors import CheckpointError, ConfigError
from lgvq_core.lpips import LPIPS, load_lpips
from lgvq_core.quantizers.vq import VectorQuantizer
from lgvq_core.registry import build, get_spec

# Two levels (32 px, 16 px): f = 2, attention at the 16 px level only.
TINY = {
    "type": "vqgan",
    "ch": 8,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [16],
    "z_channels": 8,
    "norm_groups": 4,
    "disc_start": 5,
    "disc_ndf": 8,
}


def tiny_quantizer() -> VectorQuantizer:
    return build("quantizer", {"type": "vq", "codebook_size": 16, "dim": 4, "beta_placement": "codebook"})


def tiny_vqgan(image_size: int = 32, log=None, **overrides) -> VQGAN:
    context = BuildContext(image_size=image_size, quantizer=tiny_quantizer(), log=log or (lambda message: None))
    return build("backbone", {**TINY, **overrides}, context=context)


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class FixedLogits(nn.Module):
    """A discriminator stand-in: returns given logits for real images, others for anything else."""

    def __init__(self, real: torch.Tensor, fake: torch.Tensor, real_images: torch.Tensor) -> None:
        super().__init__()
        self.real, self.fake, self.real_images = real, fake, real_images
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.real if torch.equal(x, self.real_images) else self.fake


# ------------------------------------------------------------------------------- architecture
def test_registry_builds_vqgan_from_a_table_and_a_context():
    model = tiny_vqgan()
    assert isinstance(model, VQGAN)
    assert model.quant_conv.in_channels == 8 and model.quant_conv.out_channels == 4
    assert model.post_quant_conv.in_channels == 4 and model.post_quant_conv.out_channels == 8
    assert (model.code_dim, model.downsample) == (4, 2)
    assert model.last_layer is model.decoder.conv_out.weight


def test_default_quantizer_is_the_official_taming_legacy_vq():
    spec = get_spec("backbone", "vqgan")
    assert dict(spec.default_quantizer) == {
        "type": "vq",
        "beta_placement": "codebook",
        "codebook_size": 1024,
        "dim": 256,
        "beta": 0.25,
    }


def test_forward_and_backward_on_a_tiny_config():
    model = tiny_vqgan()
    x = images()
    out = model(x)
    assert out.recon.shape == x.shape
    assert out.quant.shape == (2, 4, 16, 16)
    assert out.indices.shape == (2, 16, 16)
    model.generator_loss(x, out, step=0, discriminator=None)["total"].backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0
    assert model.quantizer.embedding.weight.grad.abs().sum() > 0


def test_attention_sits_at_the_levels_whose_side_is_in_attn_resolutions():
    at_32 = tiny_vqgan(image_size=32)  # levels 32, 16 -> attention at level 1
    assert [len(level.attn) for level in at_32.encoder.down] == [0, 1]
    assert [len(level.attn) for level in at_32.decoder.up] == [0, 2]  # num_res_blocks + 1 in the decoder
    at_16 = tiny_vqgan(image_size=16)  # levels 16, 8 -> attention at level 0
    assert [len(level.attn) for level in at_16.encoder.down] == [1, 0]
    assert [len(level.attn) for level in at_16.decoder.up] == [2, 0]


def test_encoder_downsamples_with_asymmetric_padding_and_decoder_upsamples_nearest():
    model = tiny_vqgan()
    down = model.encoder.down[0].downsample
    x = torch.randn(1, 8, 32, 32)
    torch.testing.assert_close(down(x), down.conv(F.pad(x, (0, 1, 0, 1))))
    assert down(x).shape == (1, 8, 16, 16)
    up = model.decoder.up[1].upsample
    y = torch.randn(1, 16, 16, 16)
    torch.testing.assert_close(up(y), up.conv(F.interpolate(y, scale_factor=2.0, mode="nearest")))


def test_missing_image_size_is_a_config_error_that_says_why():
    with pytest.raises(ConfigError, match="vqgan needs the image size to place attention"):
        build("backbone", TINY, context=BuildContext(quantizer=tiny_quantizer()))


def test_missing_quantizer_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a quantizer"):
        build("backbone", TINY, context=BuildContext(image_size=32))


# Reference: taming-transformers (CompVis, commit 3ba01b2) VQModel with configs/faceshq_vqgan.yaml's
# ddconfig (ch 128, ch_mult [1,1,2,2,4], num_res_blocks 2, attn_resolutions [16], z_channels 256,
# resolution 256, double_z false), n_embed 1024, embed_dim 256, loss module excluded: encoder
# 29,298,176 + decoder 42,449,795 + quant_conv 65,792 + post_quant_conv 65,792 + codebook 262,144.
TAMING_F16_PARAMETERS = 72_141_699


def test_f16_parameter_count_equals_taming_vqmodel():
    quantizer = build("quantizer", {"type": "vq", "codebook_size": 1024, "dim": 256})
    model = build("backbone", {"type": "vqgan"}, context=BuildContext(image_size=256, quantizer=quantizer, log=print))

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert (count(model.encoder), count(model.decoder)) == (29_298_176, 42_449_795)
    assert count(model) == TAMING_F16_PARAMETERS


# ------------------------------------------------------------------------------ discriminator
def test_patchgan_layout_strides_and_init():
    torch.manual_seed(0)
    disc = PatchDiscriminator(in_channels=3, ndf=64, layers=3)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    norms = [m for m in disc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [n.num_features for n in norms] == [128, 256, 512]
    assert all(
        isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in disc.modules() if isinstance(m, nn.LeakyReLU)
    )
    weights = torch.cat([c.weight.flatten() for c in convs[1:4]])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    bn_weights = torch.cat([n.weight for n in norms])
    assert abs(bn_weights.mean().item() - 1.0) < 0.005 and torch.all(torch.cat([n.bias for n in norms]) == 0)
    assert disc(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_make_discriminator_follows_the_config():
    disc = tiny_vqgan().make_discriminator()
    assert isinstance(disc, PatchDiscriminator)
    assert disc(images()).shape == (2, 1, 2, 2)


def test_hinge_and_vanilla_losses_by_hand():
    real = torch.tensor([0.5, 2.0])
    fake = torch.tensor([-2.0, 0.5])
    # hinge: ½ (mean(relu(1 - real)) + mean(relu(1 + fake))) = ½ (0.25 + 0.75)
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5))
    expected = 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    torch.testing.assert_close(vanilla_d_loss(real, fake), expected)


@pytest.mark.parametrize("kind", ["hinge", "vanilla"])
def test_discriminator_loss_uses_the_configured_loss_and_starts_at_disc_start(kind):
    model = tiny_vqgan(disc_loss=kind)
    x = images()
    real, fake = torch.tensor([[0.5, 2.0]]), torch.tensor([[-2.0, 0.5]])
    disc = FixedLogits(real, fake, x)
    expected = (hinge_d_loss if kind == "hinge" else vanilla_d_loss)(real, fake)
    terms = model.discriminator_loss(x, images(seed=1), step=5, discriminator=disc)
    torch.testing.assert_close(terms["d_loss"], expected)
    torch.testing.assert_close(terms["total"], expected)
    torch.testing.assert_close(terms["logits_real"], real.mean())
    before = model.discriminator_loss(x, images(seed=1), step=4, discriminator=disc)
    assert before["total"].item() == 0.0 and before["disc_factor"].item() == 0.0
    assert not model.discriminator_active(4) and model.discriminator_active(5)


# ---------------------------------------------------------------------------- generator loss
def test_before_disc_start_the_adversarial_term_is_off_and_the_discriminator_is_not_run():
    model = tiny_vqgan(disc_start=100)
    x = images()
    out = model(x)
    disc = FixedLogits(torch.zeros(1), torch.ones(1), x)
    terms = model.generator_loss(x, out, step=99, discriminator=disc)
    assert {"rec_loss", "quantizer_loss", "g_loss", "d_weight", "disc_factor", "total"} <= set(terms)
    assert "p_loss" not in terms  # no perceptual weights given
    assert terms["disc_factor"].item() == 0.0 and terms["g_loss"].item() == 0.0 and terms["d_weight"].item() == 0.0
    assert disc.calls == 0
    torch.testing.assert_close(terms["rec_loss"], (x - out.recon).abs().mean())
    torch.testing.assert_close(terms["total"], terms["rec_loss"] + out.quantizer_loss)


def test_codebook_weight_scales_the_quantizer_loss():
    model = tiny_vqgan(codebook_weight=3.0)
    x = images()
    out = model(x)
    terms = model.generator_loss(x, out, step=0, discriminator=None)
    torch.testing.assert_close(terms["total"], terms["rec_loss"] + 3.0 * out.quantizer_loss)


def test_from_disc_start_the_adversarial_term_uses_the_adaptive_weight_at_conv_out():
    torch.manual_seed(0)
    model = tiny_vqgan(disc_weight=0.8, disc_factor=1.0)
    disc = model.make_discriminator()
    x = images()
    out = model(x)
    terms = model.generator_loss(x, out, step=5, discriminator=disc)
    assert terms["disc_factor"].item() == 1.0
    # recompute by hand: ‖∇_W rec‖ / (‖∇_W g‖ + 1e-4) at W = decoder.conv_out.weight, × disc_weight
    weight = model.decoder.conv_out.weight
    (rec_grad,) = torch.autograd.grad(terms["nll_loss"], weight, retain_graph=True)
    (g_grad,) = torch.autograd.grad(terms["g_loss"], weight, retain_graph=True)
    expected = 0.8 * rec_grad.norm() / (g_grad.norm() + 1e-4)
    torch.testing.assert_close(terms["d_weight"], expected)
    assert not terms["d_weight"].requires_grad
    expected_total = terms["nll_loss"] + out.quantizer_loss + terms["d_weight"] * terms["g_loss"]
    torch.testing.assert_close(terms["total"], expected_total)
    terms["total"].backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0


def test_adaptive_weight_on_a_toy_matches_the_formula_and_clamps():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    rec = (w @ a) ** 2  # ∇ = 2 (w·a) a = 22 (3, 4), norm 110
    g = w @ b  # ∇ = b, norm 2
    torch.testing.assert_close(adaptive_weight(rec, g, w), torch.tensor(110 / (2 + 1e-4)))
    flat_g = (w * 0).sum() + 1.0  # no gradient at all: 110 / 1e-4 -> clamped to 1e4
    torch.testing.assert_close(adaptive_weight(rec, flat_g, w), torch.tensor(1e4))
    with torch.no_grad():
        assert adaptive_weight(w.sum(), w.sum(), w).item() == 0.0


def test_in_validation_without_grad_the_adaptive_weight_is_zero():
    model = tiny_vqgan(disc_start=0).eval()
    disc = model.make_discriminator().eval()
    x = images()
    with torch.no_grad():
        out = model(x)
        terms = model.generator_loss(x, out, step=10, discriminator=disc)
    assert terms["d_weight"].item() == 0.0
    torch.testing.assert_close(terms["total"], terms["nll_loss"] + out.quantizer_loss)


# ------------------------------------------------------------------------------------- LPIPS
def random_lpips(seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS()
    for head in model.heads:  # real LPIPS heads are non-negative
        head.weight.data.abs_()
    return model.eval()


def test_perceptual_term_is_off_without_weights_and_says_so_once():
    messages: list[str] = []
    model = tiny_vqgan(log=messages.append)
    assert model.perceptual is None
    assert len(messages) == 1 and messages[0].startswith("vqgan: perceptual loss off: no perceptual_weights given")


def test_lpips_checkpoint_turns_the_perceptual_term_on(tmp_path):
    reference = random_lpips()
    path = tmp_path / "lpips.safetensors"
    save_file(reference.state_dict(), str(path))
    messages: list[str] = []
    model = tiny_vqgan(
        perceptual_weights=str(path), perceptual_weight=0.5, perceptual_dropout=False, log=messages.append
    )
    assert messages == []
    model.eval()
    x = images()
    out = model(x)
    terms = model.generator_loss(x, out, step=0, discriminator=None)
    torch.testing.assert_close(terms["p_loss"], reference(x, out.recon).mean())
    torch.testing.assert_close(terms["nll_loss"], terms["rec_loss"] + 0.5 * terms["p_loss"])
    # identical images are at distance 0; different ones are not
    torch.testing.assert_close(model.perceptual(x, x), torch.zeros(2))
    assert torch.all(model.perceptual(x, images(seed=3)) > 0)


def test_lpips_is_frozen_and_kept_out_of_parameters_and_state_dict(tmp_path):
    path = tmp_path / "lpips.pth"
    torch.save(random_lpips().state_dict(), path)
    model = tiny_vqgan(perceptual_weights=str(path))
    assert not any(key.startswith(("perceptual", "features", "heads")) for key in model.state_dict())
    assert all(p.requires_grad is False for p in model.perceptual.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tiny_vqgan().parameters())
    model.to(torch.float64)
    assert model.perceptual.features[0].weight.dtype == torch.float64
    model.train()
    assert model.perceptual.training  # dropout in the heads while training, as in taming
    model.eval()
    assert not model.perceptual.training


def test_gradient_flows_through_lpips_into_the_decoder(tmp_path):
    path = tmp_path / "lpips.safetensors"
    save_file(random_lpips().state_dict(), str(path))
    model = tiny_vqgan(perceptual_weights=str(path), perceptual_dropout=False)
    x = images()
    terms = model.generator_loss(x, model(x), step=0, discriminator=None)
    (grad,) = torch.autograd.grad(terms["p_loss"], model.decoder.conv_out.weight)
    assert grad.abs().sum() > 0


def test_lpips_reads_the_lpips_package_heads_plus_a_torchvision_vgg16_file(tmp_path):
    reference = random_lpips(seed=1)
    state = reference.state_dict()
    heads = {f"lin{k}.model.1.weight": state[f"heads.{k}.weight"] for k in range(5)}
    vgg = {key: value for key, value in state.items() if key.startswith("features.")}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # a whole torchvision state dict has these; ignored
    torch.save(heads, tmp_path / "vgg.pth")
    torch.save(vgg, tmp_path / "vgg16.pth")
    model = tiny_vqgan(
        perceptual_weights=str(tmp_path / "vgg.pth"), perceptual_vgg_weights=str(tmp_path / "vgg16.pth")
    ).eval()
    x, y = images(), images(seed=2)
    torch.testing.assert_close(model.perceptual(x, y), reference(x, y))


def test_lpips_reads_taming_slice_names(tmp_path):
    reference = random_lpips(seed=2)
    slice_of = {
        i: s for s, (lo, hi) in enumerate([(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)], 1) for i in range(lo, hi)
    }
    state = {}
    for key, value in reference.state_dict().items():
        if key.startswith("features."):
            index = int(key.split(".")[1])
            state[f"net.slice{slice_of[index]}.{index}.{key.split('.')[2]}"] = value
        else:
            state[f"lin{key.split('.')[1]}.model.1.weight"] = value
    state["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    torch.save(state, tmp_path / "taming.pth")
    loaded = load_lpips([tmp_path / "taming.pth"])
    x, y = images(), images(seed=2)
    torch.testing.assert_close(loaded(x, y), reference(x, y))


def test_lpips_file_without_the_vgg_part_names_what_is_missing(tmp_path):
    heads = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(heads, tmp_path / "heads.pth")
    with pytest.raises(CheckpointError, match="VGG16 part is missing: add a torchvision vgg16"):
        load_lpips([tmp_path / "heads.pth"])
    with pytest.raises(CheckpointError, match="not found"):
        load_lpips([tmp_path / "absent.pth"])


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"norm_groups": 3}, "$.norm_groups: 3 groups do not divide the channel counts"),
        ({"ch_mult": []}, "$.ch_mult: must list at least one level"),
        ({"ch_mult": [1, 0]}, "$.ch_mult: every entry must be > 0"),
        ({"disc_loss": "hinj"}, '$.disc_loss: must be one of "hinge", "vanilla"'),
        (
            {"perceptual_vgg_weights": "vgg16.pth"},
            "$.perceptual_vgg_weights: is only read together with perceptual_weights",
        ),
        ({"dropout": 1.5}, "$.dropout: must be in [0, 1]"),
    ],
)
def test_bad_keys_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        tiny_vqgan(**overrides)
    assert message in str(caught.value)


def test_cross_check_reports_a_non_integer_latent_and_unused_attention(tmp_path):
    def run(image_size):
        return SimpleNamespace(data=SimpleNamespace(config=SimpleNamespace(image_size=image_size)))

    config = VQGANConfig()  # f16
    problems = list(config.cross_check(run(200), "$.model.backbone"))
    assert [p.path for p in problems] == ["$.model.backbone.ch_mult"]
    assert "200/16 is not an integer" in problems[0].message and not problems[0].warning
    (warning,) = config.cross_check(run(512), "$.model.backbone")  # levels 512 ... 32: no 16
    assert warning.warning and warning.path == "$.model.backbone.attn_resolutions"
    assert list(config.cross_check(run(256), "$.model.backbone")) == []
    missing = VQGANConfig(perceptual_weights=str(tmp_path / "nope.pth"))
    assert [p.path for p in missing.cross_check(run(256), "$")] == ["$.perceptual_weights"]


def test_image_size_not_divisible_by_the_downsampling_fails_at_build():
    with pytest.raises(ConfigError, match="does not divide the image size 31"):
        tiny_vqgan(image_size=31)
