"""lgvq from Python: load a trained tokenizer and turn images into codes and back.

    from lgvq_core.api import load_tokenizer

    tokenizer = load_tokenizer("runs/quickstart/20261206-184325-338aa8")  # its best checkpoint
    codes = tokenizer.encode(images)        # B×3×H×W in [-1, 1] -> B×h×w code indices
    vectors = tokenizer.embed(codes)        # B×D×h×w: the codebook's vectors at those indices
    recon = tokenizer.decode(codes)         # B×3×H×W

Importing this module does not import torch; :func:`load_tokenizer` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from lgvq_core.runner.load import TokenizerRun

__all__ = ["LoadedTokenizer", "load_tokenizer"]


class LoadedTokenizer:
    """A trained tokenizer, frozen and in eval mode, with its codebook.

    ``module`` is the backbone (:class:`lgvq_core.tokenizer.Tokenizer`); ``run_dir``, ``checkpoint``
    (the checkpoint directory read), ``sha256`` (its model file) and ``step`` say what was loaded;
    ``image_size`` and ``in_channels`` what it was trained on.
    """

    def __init__(self, run: TokenizerRun) -> None:
        self._run = run
        self.module = run.tokenizer
        self.device = next(iter(run.tokenizer.parameters())).device
        self.run_dir: Path = run.run_dir
        self.checkpoint: Path = run.checkpoint.path
        self.sha256: str = run.checkpoint.sha256
        self.step: int = run.step
        self.image_size = run.image_size
        self.in_channels = run.in_channels

    @property
    def codebook(self) -> torch.Tensor:
        """K×D code vectors (detached)."""
        return self.module.quantizer.codebook.detach()

    @property
    def codebook_size(self) -> int:
        return int(self.module.quantizer.codebook_size)

    def _images(self, images: Any) -> torch.Tensor:
        import torch

        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"encode() takes a batch of images B×{self.in_channels}×H×W with values in [-1, 1], got a tensor of "
                f"shape {tuple(images.shape)}; add a batch dimension with images.unsqueeze(0)"
            )
        if self.image_size is not None and tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"this tokenizer was trained on {self.image_size}×{self.image_size} images, got "
                f"{images.shape[-2]}×{images.shape[-1]}; resize them first"
            )
        return images.to(self.device, torch.float32)

    def encode(self, images: Any) -> torch.Tensor:
        """Code indices (LongTensor B×h×w, or B×k×h×w for a quantizer with k codes per position)."""
        import torch

        with torch.no_grad():
            return self.module.quantizer(self.module.encode(self._images(images))).indices

    def embed(self, codes: Any) -> torch.Tensor:
        """The code vectors at ``codes``: B×D×h×w, what the decoder reads."""
        import torch

        with torch.no_grad():
            return self.module.quantizer.decode_indices(self._codes(codes))

    def decode(self, codes: Any) -> torch.Tensor:
        """Images (B×C×H×W, about [-1, 1]) from code indices."""
        import torch

        with torch.no_grad():
            return self.module.decode_indices(self._codes(codes))

    def _codes(self, codes: Any) -> torch.Tensor:
        import torch

        codes = torch.as_tensor(codes).to(self.device)
        if codes.dtype not in (torch.int32, torch.int64) or codes.dim() not in (3, 4):
            raise ValueError(
                f"codes must be integer indices B×h×w (or B×k×h×w), as encode() returns; got {codes.dtype} of "
                f"shape {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}) (the codebook size)")
        return codes.long()

    def __repr__(self) -> str:
        return (
            f"LoadedTokenizer({type(self.module).__name__}, K={self.codebook_size}, step {self.step}, "
            f"{self.checkpoint}, device {self.device})"
        )


def load_tokenizer(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> LoadedTokenizer:
    """The tokenizer of a tokenizer run directory with the weights of ``checkpoint``.

    ``checkpoint``: ``"best"`` (the best validation checkpoint; the last one when no validation
    ran), ``"last"`` or a checkpoint directory. The checkpoint is verified against its manifest;
    only the tokenizer is built (no datasets, text encoder or alignment heads).
    """
    from lgvq_core.runner.load import load_tokenizer_run

    return LoadedTokenizer(load_tokenizer_run(run_dir, checkpoint, device))
