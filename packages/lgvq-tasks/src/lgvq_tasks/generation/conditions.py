"""What a generative prior is conditioned on, as batch keys become prefix inputs.

- semantic ``grid``: a label map ``segmentation`` (``b H W``, long) is mode-pooled onto the code
  grid, one condition token per code position (nothing is trained for the condition);
- semantic ``vq``: ``condition_codes`` (``b h w``) of a separately trained VQ autoencoder on one-hot
  masks, one token per condition code;
- text: ``text_states`` (``b L W``, cached text-encoder token states) and ``text_pad`` (``b L``,
  True at real tokens, the text encoder's ``pad_mask``) projected to prefix vectors. For
  classifier-free guidance a caption is replaced, with probability p in training, by a learned
  null condition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def require(batch: dict, key: str, model: str, why: str) -> torch.Tensor:
    """``batch[key]`` or a clear error naming the key and the condition that needs it."""
    if key not in batch:
        raise KeyError(f"{model}: the batch has no {key!r} ({why}); got keys {sorted(batch)}")
    return batch[key]


def mode_pool_labels(labels: torch.Tensor, grid: tuple[int, int], classes: int) -> torch.Tensor:
    """The most frequent label of each grid cell, ``b H W -> b h w`` (ties: the smaller label).

    ``H`` and ``W`` must be multiples of the grid's ``h`` and ``w``; labels must lie in ``[0, classes)``.
    """
    if labels.dim() != 3:
        raise ValueError(f"segmentation must be b x H x W, got shape {tuple(labels.shape)}")
    b, height, width = labels.shape
    h, w = grid
    if height % h or width % w:
        raise ValueError(
            f"segmentation of {height}x{width} cannot be pooled onto the {h}x{w} code grid; resize the maps to a "
            "multiple of the grid"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"segmentation labels must lie in [0, {classes}) (condition_vocab), got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    one_hot = F.one_hot(labels.long(), classes)  # b H W C
    counts = one_hot.view(b, h, height // h, w, width // w, classes).sum(dim=(2, 4))  # b h w C
    return counts.argmax(-1)  # argmax returns the first maximum: the smaller label on ties


def dropped(batch_size: int, probability: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """``b`` booleans, each True with ``probability``: whose condition becomes the null condition."""
    if probability <= 0:
        return torch.zeros(batch_size, dtype=torch.bool, device=device)
    return torch.rand(batch_size, generator=generator, device=device) < probability


def padded_text(states: torch.Tensor, pad: torch.Tensor, length: int, width: int, model: str):
    """Text states ``b L W`` and keep mask ``b L`` padded to ``b length W`` / ``b length``."""
    if states.dim() != 3 or states.shape[-1] != width:
        raise ValueError(
            f"{model}: text_states must be b x L x {width} (text_width), got shape {tuple(states.shape)}; set "
            "text_width to the text encoder's width"
        )
    if states.shape[1] > length:
        raise ValueError(f"{model}: captions of {states.shape[1]} tokens exceed text_length {length}; raise it")
    if pad.shape != states.shape[:2]:
        raise ValueError(f"{model}: text_pad must be b x L {tuple(states.shape[:2])}, got {tuple(pad.shape)}")
    extra = length - states.shape[1]
    return F.pad(states, (0, 0, 0, extra)), F.pad(pad.bool(), (0, extra), value=False)


class TextCondition(nn.Module):
    """Text token states as ``text_length`` prefix vectors of the model's width, with a learned null text.

    The null condition is a learned ``text_length x W`` tensor in the text encoder's space with every
    position real, so conditional and null rows run through the same projection.
    """

    def __init__(self, text_width: int, text_length: int, width: int, model: str):
        super().__init__()
        self.text_width, self.text_length, self.model = text_width, text_length, model
        self.null_states = nn.Parameter(torch.randn(text_length, text_width) * 0.02)
        self.projection = nn.Linear(text_width, width)

    def states(self, batch: dict, null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states ``b length W`` and keep mask ``b length``; rows where ``null`` is True are the null text."""
        states = require(batch, "text_states", self.model, "the text condition needs cached token states")
        pad = require(batch, "text_pad", self.model, "the text condition needs the token states' pad mask")
        states, keep = padded_text(
            states.to(self.null_states.dtype), pad, self.text_length, self.text_width, self.model
        )
        null_states = self.null_states.expand_as(states)
        states = torch.where(null[:, None, None], null_states, states)
        keep = keep | null[:, None]
        return states, keep

    def null(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The null text for ``batch_size`` rows: states ``b length W`` and an all-True keep mask."""
        states = self.null_states.expand(batch_size, -1, -1)
        return states, torch.ones(batch_size, self.text_length, dtype=torch.bool, device=states.device)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.projection(states)  # b L W -> b L d


def with_text_sizes(config, text_encoder, model: str):
    """``config`` with ``text_width`` / ``text_length`` taken from the text encoder where unset.

    A size given in the run file must agree with the encoder: a mismatch is an error naming both.
    """
    import attrs

    if text_encoder is None:
        if config.text_width is None or config.text_length is None:
            raise ValueError(f"{model}: a text condition needs a [text_encoder] (or text_width and text_length)")
        return config
    width, length = text_encoder.width, text_encoder.context_length
    if config.text_width is not None and config.text_width != width:
        raise ValueError(f"{model}: text_width {config.text_width} differs from the text encoder's width {width}")
    if config.text_length is not None and config.text_length < length:
        raise ValueError(f"{model}: text_length {config.text_length} is shorter than the text encoder's {length}")
    return attrs.evolve(config, text_width=width, text_length=config.text_length or length)
