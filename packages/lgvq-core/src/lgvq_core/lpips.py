"""LPIPS perceptual distance (Zhang et al. 2018, VGG16 variant): VQ-GAN's perceptual loss and a metric.

One implementation serves the backbones (the perceptual term of the generator loss) and the
evaluation tasks (LPIPS of reconstructions), so it lives in core.

Images in [-1, 1] are shifted by (-.030, -.088, -.188) and scaled by (.458, .448, .450) per channel,
passed through VGG16's convolutions up to relu5_3, and compared at relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3 (64, 128, 256, 512, 512 channels): features are unit-normalised over channels,
their squared difference goes through a 1×1 linear head (with dropout) and is averaged over space;
the five layers are summed. Result: one distance per image.

Weights. Nothing is downloaded. A weights file is a state dict (``.safetensors``, or ``.pth``/``.pt``
read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` wrapper is unwrapped) in this
layout, which is what ``LPIPS.state_dict()`` saves:

- ``features.<i>.weight`` / ``features.<i>.bias``: VGG16 convolutions numbered as torchvision's
  ``vgg16().features`` (i = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28);
- ``heads.<k>.weight``: the five 1×C×1×1 linear heads, k = 0..4.

Other layouts are read too: a whole torchvision ``vgg16`` state dict (``classifier.*`` ignored);
taming's ``net.slice<s>.<i>.*`` for the VGG part; the ``lpips`` package's and taming's
``lin<k>.model.<j>.weight`` (or ``lin<k>.weight``) for the heads; ``scaling_layer.*`` is ignored.
The VGG part and the heads may come from two files (e.g. the ``lpips`` package's ``vgg.pth`` heads
plus torchvision's ``vgg16`` weights): :func:`load_lpips` merges them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from lgvq_core.errors import CheckpointError
from lgvq_core.safe_load import describe_load_error

#: VGG16 configuration "D" up to relu5_3: conv widths, "M" for 2×2 max-pooling.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
)
#: Index (in ``features``) one past each compared ReLU: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
TAP_ENDS: tuple[int, ...] = (4, 9, 16, 23, 30)
CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def vgg16_features(in_channels: int = 3) -> nn.Sequential:
    """VGG16's ``features`` up to relu5_3, numbered as torchvision's (indices 0..29)."""
    modules: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_LAYOUT:
        if item == "M":
            modules.append(nn.MaxPool2d(2, 2))
        else:
            modules += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*modules)


class LPIPS(nn.Module):
    """Frozen LPIPS; ``forward(x, y)`` gives one distance per image (B), differentiable in x and y."""

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = vgg16_features()
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.requires_grad_(False)

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised VGG features at the five compared layers."""
        h = (images - self.shift) / self.scale
        taps = []
        start = 0
        for end in TAP_ENDS:
            for index in range(start, end):
                h = self.features[index](h)
            taps.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            start = end
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        distance = x.new_zeros(x.shape[0])
        for head, fx, fy in zip(self.heads, self.taps(x), self.taps(y), strict=True):
            distance = distance + head(self.dropout((fx - fy).pow(2))).mean(dim=(1, 2, 3))
        return distance


_TAMING_SLICE = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")
_HEAD = re.compile(r"^lin(\d)(?:\.model\.\d+)?\.weight$")
_IGNORED_PREFIXES = ("classifier.", "scaling_layer.")


def canonical_key(key: str) -> str | None:
    """This module's name for a key of any accepted layout; ``None`` for keys that are ignored."""
    if key.startswith(_IGNORED_PREFIXES):
        return None
    if match := _TAMING_SLICE.match(key):
        return f"features.{match[1]}.{match[2]}"
    if match := _HEAD.match(key):
        return f"heads.{match[1]}.weight"
    return key


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``torch.save`` file (never runs code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"LPIPS weights file not found: {path} (check perceptual_weights / perceptual_vgg_weights)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is a bad checkpoint
        raise CheckpointError(f"cannot read LPIPS weights {path}: {describe_load_error(exc)}") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"LPIPS weights {path} hold a {type(state).__name__}, not a state dict")
    return dict(state)


def load_lpips(paths: Iterable[str | Path], dropout: float = 0.5) -> LPIPS:
    """An :class:`LPIPS` with every weight taken from ``paths`` (merged; later files win)."""
    model = LPIPS(dropout)
    expected = model.state_dict()
    merged: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    sources = [str(p) for p in paths]
    for path in sources:
        for key, value in read_state_dict(path).items():
            name = canonical_key(key)
            if name is None:
                continue
            if name not in expected:
                unknown.append(f"{key} ({path})")
                continue
            merged[name] = value
    where = " + ".join(sources)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise CheckpointError(f"LPIPS weights {where}: unexpected keys {shown}; see lgvq_core.lpips for the layout")
    missing = [key for key in expected if key not in merged]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        hint = (
            " (the VGG16 part is missing: add a torchvision vgg16 state dict as perceptual_vgg_weights)"
            if all(k.startswith("features.") for k in missing)
            else ""
        )
        raise CheckpointError(f"LPIPS weights {where}: missing {len(missing)} tensors: {shown}{hint}")
    wrong = [
        f"{k} {tuple(merged[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if merged[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"LPIPS weights {where}: wrong shapes: " + "; ".join(wrong[:5]))
    model.load_state_dict(merged)
    return model.eval()
