"""The `vqgan` backbone: taming's VQModel + VQLPIPSWithDiscriminator as one Tokenizer (docs/method.md: VQ-GAN).

Generator step: L1 + perceptual_weight·LPIPS (the reconstruction term), + codebook_weight·L_vq,
+ d_w·disc_factor·(-mean D(x̂)) from ``disc_start`` on, with the adaptive weight d_w taken at
``decoder.conv_out.weight``. Discriminator step: disc_factor·(hinge or vanilla loss).

The LPIPS network is frozen and held outside the module tree: it moves with ``.to()`` and follows
``train()``/``eval()``, but it is neither a parameter nor part of ``state_dict()`` (it is never
checkpointed with the model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lgvq_backbones.latent_grid import require_quantizer
from lgvq_backbones.vqgan.adversarial import D_LOSSES, adaptive_weight
from lgvq_backbones.vqgan.autoencoder import Decoder, Encoder
from lgvq_backbones.vqgan.config import VQGANConfig
from lgvq_backbones.vqgan.discriminator import PatchDiscriminator
from lgvq_core.api import LPIPS, BuildContext, ConfigError, Quantizer, Tokenizer, TokenizerOutput, load_lpips


class VQGAN(Tokenizer):
    """Encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder.

    ``quant_conv`` maps z_channels to the quantizer's width D and ``post_quant_conv`` back, so any
    quantizer (``vq``, ``cvq``, a two-part VQCT codebook, ...) plugs in by its ``dim``.
    """

    def __init__(
        self,
        config: VQGANConfig,
        quantizer: Quantizer,
        image_size: int,
        in_channels: int = 3,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_size = image_size
        self.in_channels = in_channels
        self.quantizer = quantizer
        self.code_dim = quantizer.dim
        self.downsample = config.downsample
        sizes = dict(
            ch=config.ch,
            ch_mult=list(config.ch_mult),
            num_res_blocks=config.num_res_blocks,
            attn_resolutions=list(config.attn_resolutions),
            z_channels=config.z_channels,
            image_size=image_size,
            dropout=config.dropout,
            groups=config.norm_groups,
        )
        self.encoder = Encoder(in_channels=in_channels, **sizes)
        self.decoder = Decoder(out_channels=in_channels, **sizes)
        self.quant_conv = nn.Conv2d(config.z_channels, quantizer.dim, 1)
        self.post_quant_conv = nn.Conv2d(quantizer.dim, config.z_channels, 1)
        if in_channels != 3 and config.perceptual_weights is not None and config.perceptual_weight > 0:
            raise ConfigError(
                [
                    f"$.model.backbone.perceptual_weights: LPIPS compares RGB images, but the images have {in_channels} channels"
                ]
            )
        self.__dict__["perceptual"] = self._make_perceptual(config, log)
        self._discriminator_loss = D_LOSSES[config.disc_loss]

    @staticmethod
    def _make_perceptual(config: VQGANConfig, log: Callable[[str], None]) -> LPIPS | None:
        if config.perceptual_weight == 0:
            log("vqgan: perceptual loss off: perceptual_weight = 0")
            return None
        if config.perceptual_weights is None:
            log(
                "vqgan: perceptual loss off: no perceptual_weights given (LPIPS needs VGG16 and linear-head "
                "weights, which are never downloaded); the reconstruction term is L1 only. Set "
                '[model.backbone] perceptual_weights = "path/to/lpips.safetensors" to turn it on.'
            )
            return None
        paths = [p for p in (config.perceptual_vgg_weights, config.perceptual_weights) if p is not None]
        model = load_lpips(paths)
        model.train(config.perceptual_dropout)
        return model

    # -- the frozen LPIPS follows the module without being part of it ------------------------
    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self.perceptual is not None:
            self.perceptual._apply(fn, recurse)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.train(mode and self.config.perceptual_dropout)
        return self

    # -- tokenizer --------------------------------------------------------------------------
    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight is measured at: the decoder's output conv."""
        return self.decoder.conv_out.weight

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    def adversarial_factor(self, step: int) -> float:
        """disc_factor from ``disc_start`` (counted in generator steps) on, else 0."""
        return self.config.disc_factor if step >= self.config.disc_start else 0.0

    def discriminator_active(self, step: int) -> bool:
        return self.adversarial_factor(step) > 0

    def make_discriminator(self) -> nn.Module:
        return PatchDiscriminator(self.in_channels, self.config.disc_ndf, self.config.disc_layers)

    def generator_loss(
        self, images: torch.Tensor, output: TokenizerOutput, step: int, discriminator: nn.Module | None
    ) -> dict[str, torch.Tensor]:
        """Terms: rec_loss (L1), p_loss (LPIPS, when on), nll_loss (their weighted sum), quantizer_loss,
        g_loss, d_weight, disc_factor and total.

        Before ``disc_start`` (or without a discriminator) the discriminator is not run and g_loss,
        d_weight and disc_factor are 0. The generator step leaves gradients in the discriminator's
        parameters; the runner clears them before the discriminator step.
        """
        recon = output.recon
        rec_loss = (images - recon).abs().mean()
        terms: dict[str, torch.Tensor] = {"rec_loss": rec_loss}
        nll_loss = rec_loss
        if self.perceptual is not None:
            p_loss = self.perceptual(images, recon).mean()
            terms["p_loss"] = p_loss
            nll_loss = rec_loss + self.config.perceptual_weight * p_loss
        terms["nll_loss"] = nll_loss
        terms["quantizer_loss"] = output.quantizer_loss
        total = nll_loss + self.config.codebook_weight * output.quantizer_loss

        factor = self.adversarial_factor(step)
        zero = torch.zeros((), device=recon.device)
        g_loss, d_weight = zero, zero
        if discriminator is not None and factor > 0:
            g_loss = -discriminator(recon).mean()
            d_weight = adaptive_weight(nll_loss, g_loss, self.last_layer) * self.config.disc_weight
            total = total + d_weight * factor * g_loss
        terms["g_loss"] = g_loss
        terms["d_weight"] = d_weight
        terms["disc_factor"] = torch.tensor(factor, device=recon.device)
        terms["total"] = total
        return terms

    def discriminator_loss(
        self, images: torch.Tensor, recon: torch.Tensor, step: int, discriminator: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Terms: d_loss (unweighted), logits_real, logits_fake (means, detached), disc_factor, total."""
        logits_real = discriminator(images.detach())
        logits_fake = discriminator(recon.detach())
        d_loss = self._discriminator_loss(logits_real, logits_fake)
        factor = self.adversarial_factor(step)
        return {
            "d_loss": d_loss,
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
            "disc_factor": torch.tensor(factor, device=d_loss.device),
            "total": factor * d_loss,
        }


def build_vqgan(config: VQGANConfig, context: BuildContext) -> VQGAN:
    quantizer = require_quantizer(context, "vqgan")
    image_size = context.image_size
    if image_size is None:
        raise ConfigError(
            [
                "$.model.backbone: vqgan needs the image size to place attention at attn_resolutions, but the "
                "build context has none (BuildContext.image_size); give the dataset an image size"
            ]
        )
    if image_size % config.downsample:
        raise ConfigError(
            [
                f"$.model.backbone.ch_mult: {len(config.ch_mult)} levels downsample by {config.downsample}, which "
                f"does not divide the image size {image_size}"
            ]
        )
    return VQGAN(config, quantizer, image_size, in_channels=context.in_channels, log=context.log)
