"""Config of the `vqgan` backbone (no torch). Defaults: taming f16 as used by LG-VQ (docs/method.md: VQ-GAN)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import attrs

from lgvq_backbones.latent_grid import dataset_image_size, latent_grid_problems
from lgvq_core.api import Problem, non_negative, option, positive, probability


def _positive_list(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if any(v <= 0 for v in value):
        raise ValueError(f"every entry must be > 0, got {value!r}")


def _non_empty(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if not value:
        raise ValueError("must list at least one level")


def _divides_channels(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    widths = sorted({instance.ch} | {instance.ch * m for m in instance.ch_mult})
    bad = [w for w in widths if w % value]
    if bad:
        raise ValueError(
            f"{value} groups do not divide the channel counts {bad} (ch × ch_mult); choose norm_groups dividing "
            f"every one of {widths}"
        )


def _vgg_needs_heads(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and instance.perceptual_weights is None:
        raise ValueError("is only read together with perceptual_weights (the file with the LPIPS heads)")


@attrs.define
class VQGANConfig:
    """VQ-GAN (Esser et al. 2021) as in taming-transformers: encoder/decoder, LPIPS, PatchGAN."""

    # -- encoder / decoder ------------------------------------------------------------------
    ch: int = option(128, "Base channel count of the encoder and decoder.", positive)
    ch_mult: list[int] = option(
        factory=lambda: [1, 1, 2, 2, 4],
        doc="Channel multiplier per level; len(ch_mult)-1 stride-2 stages, so f = 2^(len-1) (f16 by default).",
        validator=[_non_empty, _positive_list],
    )
    num_res_blocks: int = option(2, "Residual blocks per encoder level (the decoder has one more).", positive)
    attn_resolutions: list[int] = option(
        factory=lambda: [16],
        doc="Side lengths (pixels of that level) at which the residual blocks are followed by attention.",
        validator=_positive_list,
    )
    z_channels: int = option(256, "Channels of the encoder output before quant_conv.", positive)
    dropout: float = option(0.0, "Dropout inside the residual blocks.", probability)
    norm_groups: int = option(
        32, "GroupNorm groups (taming: 32); must divide ch × every ch_mult.", [positive, _divides_channels]
    )
    # -- generator loss ---------------------------------------------------------------------
    codebook_weight: float = option(1.0, "Weight of the quantizer loss.", non_negative)
    perceptual_weight: float = option(
        1.0, "Weight of LPIPS in the reconstruction term (needs perceptual_weights).", non_negative
    )
    perceptual_weights: str | None = option(
        None,
        "LPIPS weights file (.safetensors or .pth state dict: VGG16 features + the five linear heads; layout in "
        "lgvq_core.lpips). Nothing is downloaded: without it the perceptual term is off.",
    )
    perceptual_vgg_weights: str | None = option(
        None,
        "Optional second file with the VGG16 part (e.g. torchvision's vgg16 state dict) when perceptual_weights "
        "holds only the heads (like the lpips package's vgg.pth).",
        _vgg_needs_heads,
    )
    perceptual_dropout: bool = option(
        True,
        "Dropout (p 0.5) before the LPIPS heads in training mode, as in taming, where the loss module follows "
        "the model's train mode; false makes the perceptual term deterministic.",
    )
    # -- adversarial loss -------------------------------------------------------------------
    disc_start: int = option(
        10000,
        "First generator step with the adversarial term and discriminator updates (taming ImageNet: 250001).",
        non_negative,
    )
    disc_weight: float = option(0.8, "Multiplies the adaptive weight of the adversarial term.", non_negative)
    disc_factor: float = option(1.0, "Adversarial factor from disc_start on (0 switches the GAN off).", non_negative)
    disc_loss: Literal["hinge", "vanilla"] = option("hinge", "Discriminator loss: hinge or vanilla (softplus).")
    disc_layers: int = option(3, "Strided layers of the PatchGAN discriminator.", positive)
    disc_ndf: int = option(64, "Channels of the discriminator's first layer.", positive)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def contract_config(cls) -> Any:
        """A small instance for the plugin contract and the combination runs: 32 px -> 16 x 16 latents."""
        return cls(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], z_channels=32, norm_groups=8)

    def cross_check(self, run: Any, path: str) -> Iterable[Problem]:
        image_size = dataset_image_size(run)
        problems = latent_grid_problems(image_size, self.downsample, f"{path}.ch_mult", "ch_mult")
        if image_size is not None and not problems:
            sizes = [image_size // 2**i for i in range(len(self.ch_mult))]
            unused = [r for r in self.attn_resolutions if r not in sizes]
            if unused:
                problems.append(
                    Problem(
                        f"{path}.attn_resolutions",
                        f"no level has side {unused} with {image_size} px images (levels: {sizes}); "
                        "that attention is never used",
                        warning=True,
                    )
                )
        for key in ("perceptual_weights", "perceptual_vgg_weights"):
            value = getattr(self, key)
            if value is not None and not Path(value).expanduser().is_file():
                problems.append(Problem(f"{path}.{key}", f"file not found: {value}"))
        if self.perceptual_weights is not None and self.perceptual_weight == 0:
            problems.append(
                Problem(
                    f"{path}.perceptual_weights", "perceptual_weight is 0, so these weights are not used", warning=True
                )
            )
        return problems
