"""Config classes of the `cvq` quantizer and backbone (no torch at import)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import attrs

from lgvq_backbones.vqgan.config import VQGANConfig
from lgvq_core.api import Problem, non_negative, option, positive


def _open_unit_interval(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"must be in (0, 1), got {value!r}")


@attrs.define
class CVQConfig:
    """CVQ: nearest-code lookup with online re-initialisation of unused codes (docs/method.md: CVQ).

    Defaults are LG-VQ's copy of CVQ (distance l2, anchor probrandom, contrastive term on).
    """

    codebook_size: int = option(1024, "Number of codes K.", positive)
    dim: int = option(256, "Code width D (the channels of quant).", positive)
    beta: float = option(0.25, "Weight beta of the commitment loss.", non_negative)
    beta_placement: Literal["commitment", "codebook"] = option(
        "commitment",
        'Where beta goes: "commitment" = beta·||sg(z_q)-z||² + ||z_q-sg(z)||² (CVQ, paper Eq. 2); '
        '"codebook" = taming\'s legacy placement.',
    )
    distance: Literal["l2", "cos"] = option(
        "l2", 'Similarity for lookup, anchors and the contrastive term: "l2" (LG-VQ, CVQ modules.py) or "cos".'
    )
    anchor: Literal["closest", "random", "probrandom"] = option(
        "probrandom",
        "Feature a re-initialised code moves to: the closest latent of the batch, a row of a feature "
        "pool of past latents, or a latent sampled with probability softmax over the batch of its similarity.",
    )
    first_batch: bool = option(False, "Re-initialise only once, on the first training step (CVQ's offline variant).")
    contras_loss: bool = option(
        True, "Add CVQ's contrastive term (weight 1, temperature 0.07); it moves only the codebook."
    )
    decay: float = option(
        0.99, "EMA decay gamma of the code-usage statistics that drive the re-initialisation.", _open_unit_interval
    )
    update_in_discriminator_pass: bool = option(
        True,
        "Official quirk: LG-VQ's LG_cvq (PyTorch Lightning 1.x, two optimizers) runs the model forward in "
        "train mode in both optimizer passes of a batch, so the usage EMA decays twice and unused codes are "
        "re-anchored twice per batch, the second time on encoder features after the generator update, and the "
        "discriminator trains on that second pass's reconstructions. true reproduces this (one extra no-grad "
        "forward per step, on every step, as the official discriminator pass runs before disc_start too; only "
        "with a backbone that has a discriminator). false: one update per batch, and the discriminator trains on "
        "the generator pass's reconstructions.",
    )


@attrs.define
class CVQBackboneConfig(VQGANConfig):
    """VQ-GAN (taming f16) with the CVQ quantizer, as in LG-VQ's ``LG_cvq`` (docs/method.md: CVQ)."""

    def cross_check(self, run: Any, path: str) -> Iterable[Problem]:
        yield from super().cross_check(run, path)
        quantizer = run.model.quantizer
        if quantizer is not None and quantizer.type != "cvq":
            yield Problem(
                "$.model.quantizer.type",
                f'backbone "cvq" is VQ-GAN with the cvq quantizer, but [model.quantizer] is {quantizer.type!r}; '
                'remove [model.quantizer] (or set type = "cvq"), or use backbone type = "vqgan" to pair '
                "VQ-GAN with another quantizer",
                warning=True,
            )
