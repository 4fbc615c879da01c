"""What a factory may use besides its own config: the build context (no torch at import)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs


def _print(message: str) -> None:
    print(message, flush=True)


@attrs.define
class BuildContext:
    """Handed to every factory as ``factory(config, context)``.

    The runner fills what it knows before each build; fields a component does not need stay
    ``None``. Components read from the context and never reach into the run file or the plugin
    manager.
    """

    #: Device the component will run on (``"cpu"``, ``"cuda:0"``).
    device: str = "cpu"
    #: Run seed.
    seed: int = 0
    #: Image side length of the dataset (square images), when known.
    image_size: int | None = None
    #: Image channels: the dataset's ``in_channels`` (3 for RGB; C for ``segmentation-maps``).
    in_channels: int = 3
    #: Datasets: which split to build (``"train"`` or ``"val"``).
    split: str = "train"
    #: Datasets: return a marker for an unreadable item instead of raising (``train.skip_bad_items``).
    skip_bad_items: bool = False
    #: Backbones: the quantizer built from ``[model.quantizer]``.
    quantizer: Any = None
    #: Alignment losses and text-aware quantizers: the frozen :class:`lgvq_core.text_encoder.TextEncoder`.
    text_encoder: Any = None
    #: Alignment losses: channels ``D`` of ``quant`` (the backbone's ``code_dim``).
    code_dim: int | None = None
    #: Alignment losses: latent grid ``(h, w)`` of ``quant``.
    latent_size: tuple[int, int] | None = None
    #: Components that learn from text (VQCT's word prior): every training caption, lazily.
    train_captions: Callable[[], Iterable[str]] | None = None
    #: Downstream models: the training split (a :class:`lgvq_core.data.codes.CodeDataset`), e.g. to
    #: build a vocabulary of its captions, questions or answers.
    train_data: Any = None
    #: Downstream models: the frozen tokenizer's codebook and grid (:class:`lgvq_core.downstream.FrozenTokenizer`).
    frozen_tokenizer: Any = None
    #: Downstream models with a ``[condition_tokenizer]`` (semantic ``vq``): that tokenizer's codebook and grid
    #: (:class:`lgvq_core.downstream.FrozenTokenizer`).
    condition_tokenizer: Any = None
    #: A folder where a component may cache derived data (``None``: do not cache on disk).
    cache_dir: str | None = None
    #: Where a component reports something the user should know (goes to the run log).
    log: Callable[[str], None] = _print
