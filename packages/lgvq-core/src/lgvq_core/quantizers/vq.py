"""The ``vq`` quantizer: nearest code by squared L2, straight-through, learned codebook.

Paper Eq. 1-2; docs/method.md: Quantizers and β placement.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.quantizers.base import Quantizer, QuantizerOutput
from lgvq_core.quantizers.config import VQConfig
from lgvq_core.quantizers.kmeans import kmeans
from lgvq_core.quantizers.lookup import (
    batch_code_stats,
    code_counts,
    flatten_latents,
    lookup_codes,
    nearest_codes,
    quantize_straight_through,
)
from lgvq_core.quantizers.restarts import DeadCodeRestarts

CODEBOOK_INITS = ("uniform", "kmeans")


def loss_weights(beta: float, beta_placement: str) -> tuple[float, float]:
    """(weight of ||z_q - sg z||², weight of ||sg z_q - z||²) for a beta placement."""
    if beta_placement == "commitment":
        return 1.0, beta
    if beta_placement == "codebook":
        return beta, 1.0
    raise ValueError(f'beta_placement must be "commitment" or "codebook", got {beta_placement!r}')


def _recheck_initialized(module: NearestCodeQuantizer, incompatible_keys: Any) -> None:
    """After a state dict is loaded, the next training forward reads the loaded ``initialized`` flag."""
    module._initialized_known = False


class NearestCodeQuantizer(Quantizer):
    """Shared forward of the codebook quantizers: lookup, loss, straight-through, batch stats.

    ``quant = z + sg(z_q - z)``; loss ``w_q·||z_q - sg z||² + w_z·||sg z_q - z||²`` (means) with
    ``codebook_weight`` w_q and ``commitment_weight`` w_z. The lookup, the loss and the
    straight-through output all reuse one detached difference ``z_q - z``.

    All of it happens in the *lookup space* of width d: D, unless a subclass projects the latents
    there (:meth:`prepare_latents`) and the straight-through codes back (:meth:`restore_width`).
    Subclasses provide ``stored_codes`` and ``codebook``, and may update the codebook after the lookup.
    """

    codebook_weight: float
    commitment_weight: float
    #: "uniform" (U(-1/K, 1/K) at construction) or "kmeans" (see :meth:`configure_init`).
    init: str = "uniform"
    kmeans_iters: int = 10
    #: Whether the lookup compares unit vectors; k-means then keeps its centres on the sphere.
    unit_codes: bool = False

    @property
    def stored_codes(self) -> torch.Tensor:
        """The K×d tensor (parameter or buffer) that holds the codes; k-means and restarts write it in place."""
        raise NotImplementedError

    def lookup_codebook(self) -> torch.Tensor:
        """The K×d codes this forward compares the latents with."""
        return self.stored_codes

    def check_latents(self, z: torch.Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects latents of shape B×{self.dim}×h×w, got {tuple(z.shape)}")

    def prepare_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The latents as they are looked up, B×d×h×w (the cosine quantizer normalises them)."""
        return z

    def restore_width(self, quant: torch.Tensor) -> torch.Tensor:
        """The straight-through codes (B×d×h×w) as the quantizer returns them, B×D×h×w."""
        return quant

    def configure_init(self, init: str, kmeans_iters: int) -> None:
        """Keep the constructor's codebook ("uniform") or set it by k-means on the first training batch.

        With "kmeans", the first forward in training mode clusters that batch's lookup-space latents
        (:func:`~lgvq_core.quantizers.kmeans.kmeans`) and :meth:`adopt_kmeans` the result, once: the
        persistent ``initialized`` flag, saved with the weights, stops a resumed or reloaded model from
        doing it again. Eval mode never initialises.
        """
        if init not in CODEBOOK_INITS:
            raise ValueError(f'init must be "uniform" or "kmeans", got {init!r}')
        if kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {kmeans_iters}")
        self.init = init
        self.kmeans_iters = kmeans_iters
        if init == "kmeans":
            self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
            # Host-side copy of the flag once read, so later steps cost no device synchronisation.
            self._initialized_known = False
            self.register_load_state_dict_post_hook(_recheck_initialized)

    @torch.no_grad()
    def initialise_codebook(self, flat: torch.Tensor) -> None:
        """Run the k-means initialisation on ``flat`` ((b h w) d) if it is due (see :meth:`configure_init`)."""
        if self.init != "kmeans" or not self.training or self._initialized_known:
            return
        if not bool(self.initialized):  # one host sync, on the first training forward only
            centres, sizes = kmeans(flat, self.codebook_size, self.kmeans_iters, spherical=self.unit_codes)
            self.adopt_kmeans(centres, sizes)
            self.initialized.fill_(True)
        self._initialized_known = True

    def init_repr(self) -> str:
        return "" if self.init == "uniform" else f", init={self.init!r}, kmeans_iters={self.kmeans_iters}"

    def adopt_kmeans(self, centres: torch.Tensor, sizes: torch.Tensor) -> None:
        """Make the k-means ``centres`` (K×d) the codes; ``sizes`` (K) are their clusters' sizes."""
        self.stored_codes.copy_(centres)

    def after_lookup(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """Called with the detached ``(b h w) d`` latents, their codes and the code counts."""

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self.check_latents(z)
        z = self.prepare_latents(z.to(self.stored_codes.dtype))  # b d h w, d the lookup width
        batch, _, height, width = z.shape
        with torch.no_grad():
            flat = flatten_latents(z)  # (b h w) d
        self.initialise_codebook(flat)
        codebook = self.lookup_codebook()  # k d
        with torch.no_grad():
            indices = nearest_codes(flat, codebook)  # (b h w)
        quant, loss = quantize_straight_through(
            z, codebook, flat, indices, self.codebook_weight, self.commitment_weight
        )
        counts = code_counts(indices, self.codebook_size)
        self.after_lookup(flat, indices, counts)
        return QuantizerOutput(
            quant=self.restore_width(quant),
            indices=indices.view(batch, height, width),
            loss=loss,
            stats=batch_code_stats(counts),
        )

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return lookup_codes(indices, self.codebook)


def _project(z: torch.Tensor, projection: nn.Conv2d) -> torch.Tensor:
    """A 1×1 projection of B×C×h×w latents in their own precision (the lookup must not run in half)."""
    with torch.autocast(z.device.type, enabled=False):
        return projection(z)


class VectorQuantizer(NearestCodeQuantizer):
    """Codebook ``embedding`` (K×D, init U(-1/K, 1/K)) trained by the VQ loss; beta as placed.

    Levers against codebook collapse at small scale, all off by default: ``init = "kmeans"``;
    dead-code restarts (``dead_code_threshold`` > 0: a :class:`DeadCodeRestarts` as ``restarts``);
    factorised codes (``lookup_dim`` d, ViT-VQGAN: 1×1 projections ``project_in`` D→d and
    ``project_out`` d→D around a K×d ``embedding``; the lookup and the loss happen in d dimensions,
    and ``codebook`` is ``project_out`` of the codes, the K×D vectors ``decode_indices`` places).
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        beta_placement: str = "commitment",
        *,
        init: str = "uniform",
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
        lookup_dim: int | None = None,
    ) -> None:
        super().__init__()
        if lookup_dim is not None and not 1 <= lookup_dim <= dim:
            raise ValueError(f"lookup_dim must be in [1, dim] = [1, {dim}], got {lookup_dim}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.lookup_dim = lookup_dim
        self.beta = beta
        self.beta_placement = beta_placement
        self.codebook_weight, self.commitment_weight = loss_weights(beta, beta_placement)
        self.embedding = nn.Embedding(codebook_size, dim if lookup_dim is None else lookup_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.project_in = None if lookup_dim is None else nn.Conv2d(dim, lookup_dim, 1)
        self.project_out = None if lookup_dim is None else nn.Conv2d(lookup_dim, dim, 1)
        self.restarts = (
            DeadCodeRestarts(codebook_size, dead_code_threshold, usage_decay) if dead_code_threshold > 0 else None
        )
        self.configure_init(init, kmeans_iters)

    @property
    def stored_codes(self) -> torch.Tensor:
        return self.embedding.weight

    def codes_from_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The lookup-space codes stored as ``weight`` (the cosine quantizer normalises them)."""
        return weight

    def lookup_codebook(self) -> torch.Tensor:
        weight = self.embedding.weight
        if self.restarts is not None and self.training:
            # Restarts rewrite the weight in place after the lookup, and the graph (the cosine
            # normalisation's backward) must keep the codes it was built from.
            weight = weight.clone()
        return self.codes_from_weight(weight)

    @property
    def codebook(self) -> torch.Tensor:
        codes = self.codes_from_weight(self.embedding.weight)  # k d
        if self.project_out is None:
            return codes
        with torch.autocast(codes.device.type, enabled=False):
            return F.linear(codes, self.project_out.weight.flatten(1), self.project_out.bias)  # k D

    def prepare_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.project_in is None else _project(z, self.project_in)

    def restore_width(self, quant: torch.Tensor) -> torch.Tensor:
        return quant if self.project_out is None else _project(quant, self.project_out)

    def after_lookup(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        if self.restarts is not None and self.training:
            self.restarts.update(self.embedding.weight, flat, counts)

    def extra_repr(self) -> str:
        text = (
            f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, "
            f"beta_placement={self.beta_placement!r}{self.init_repr()}"
        )
        return text if self.lookup_dim is None else f"{text}, lookup_dim={self.lookup_dim}"


def lever_options(config: Any) -> dict[str, Any]:
    """The collapse levers of a ``vq`` or ``cosine`` table as constructor keywords."""
    return {
        "init": config.init,
        "kmeans_iters": config.kmeans_iters,
        "dead_code_threshold": config.dead_code_threshold,
        "usage_decay": config.usage_decay,
        "lookup_dim": config.lookup_dim,
    }


def build_vq(config: VQConfig, context: Any = None) -> VectorQuantizer:
    return VectorQuantizer(
        config.codebook_size, config.dim, config.beta, config.beta_placement, **lever_options(config)
    )
