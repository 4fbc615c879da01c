"""Hand-made models and data for the task tests: every number they produce can be worked out by hand."""

from __future__ import annotations

import torch
from torch import nn

from lgvq_core.quantizers.base import QuantizerOutput
from lgvq_core.tasks import TrainedModel
from lgvq_core.testing.config import TinyTextConfig
from lgvq_core.testing.doubles import TinyText
from lgvq_core.tokenizer import TokenizerOutput


class ListData:
    """A split of hand-made items: images (3×s×s in [-1, 1]) and their captions (the first one is the evaluation caption)."""

    def __init__(self, images: torch.Tensor, captions: list[list[str]]) -> None:
        assert len(images) == len(captions)
        self.images = images
        self.captions = captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return {
            "image": self.images[index],
            "caption": self.captions[index][0],
            "captions": list(self.captions[index]),
            "index": index,
        }


def id_images(count: int, size: int = 4) -> torch.Tensor:
    """Image i is filled with the value i / 100 - 0.5, so a stub can read its index back."""
    return torch.stack([torch.full((3, size, size), i / 100 - 0.5) for i in range(count)])


def image_ids(tensor: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`id_images` on any b×c×h×w tensor made from those images."""
    return ((tensor[:, 0, 0, 0] + 0.5) * 100).round().long()


class PassThroughQuantizer(nn.Module):
    """quant = z; code index 0 everywhere."""

    def __init__(self, codebook_size: int = 4, dim: int = 3) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.weight = nn.Parameter(torch.eye(codebook_size, dim))

    @property
    def codebook(self) -> torch.Tensor:
        return self.weight

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        indices = torch.zeros(z.shape[0], z.shape[2], z.shape[3], dtype=torch.long)
        return QuantizerOutput(quant=z, indices=indices, loss=z.new_zeros(()))


class IdentityTokenizer(nn.Module):
    """encode = identity, so the codes are the images; the reconstruction is the image + ``offset``."""

    def __init__(self, quantizer: nn.Module | None = None, offset: float = 0.0) -> None:
        super().__init__()
        self.quantizer = quantizer or PassThroughQuantizer()
        self.offset = offset

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        q = self.quantizer(self.encode(images))
        return TokenizerOutput(recon=images + self.offset, quant=q.quant, indices=q.indices, quantizer_loss=q.loss)


def tiny_text() -> TinyText:
    return TinyText(TinyTextConfig(width=16, vocab_size=64, context_length=12))


def trained_model(tokenizer: nn.Module, alignment=None, text_encoder=None, batch_size: int = 2) -> TrainedModel:
    return TrainedModel(
        tokenizer=tokenizer,
        alignment=alignment,
        text_encoder=text_encoder,
        text_cache=None,
        device=torch.device("cpu"),
        config=None,
        batch_size=batch_size,
    )
