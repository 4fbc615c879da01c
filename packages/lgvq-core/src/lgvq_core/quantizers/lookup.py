"""Nearest-code lookup and the pieces every codebook quantizer shares.

Cost model: one K×D codebook against n = b·h·w latents is a single (n×D)·(D×K) matmul. Nothing
here builds an n×K×D tensor or loops over codes, and the lookup runs without autograd (argmin has
no gradient), so backward never touches the n×K score matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def flatten_latents(z: torch.Tensor) -> torch.Tensor:
    """B×D×h×w -> ``(b h w) d`` (a contiguous copy, row-major over b, h, w)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def unflatten_codes(flat: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """``(b h w) d`` -> B×D×h×w (a view)."""
    return flat.view(batch, height, width, -1).permute(0, 3, 1, 2)


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_k ||z_n - e_k||² for every row of ``flat`` (n×D) against ``codebook`` (K×D) -> n.

    ||z_n||² is the same for every k, so only ||e_k||² - 2 z_n·e_k is formed: one ``addmm``, in the
    inputs' precision even under autocast (a half-precision argmin would pick wrong codes). The
    index comes from ``min(dim)``, which returns the first minimum as ``argmin`` does and runs about
    3× faster than ``argmin`` on CPU (a vectorised kernel; ``bench/quantizer.py`` times both).
    """
    with torch.no_grad(), torch.autocast(flat.device.type, enabled=False):
        code_sq = codebook.pow(2).sum(1)  # k
        scores = torch.addmm(code_sq, flat, codebook.t(), beta=1.0, alpha=-2.0)  # n k
        return scores.min(dim=1).indices


def squared_distances(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Full ||z_n - e_k||² (n×K), for quantizers that use the distances beyond the argmin."""
    distances = torch.addmm(codebook.pow(2).sum(1), flat, codebook.t(), beta=1.0, alpha=-2.0)  # n k
    return distances.add_(flat.pow(2).sum(1, keepdim=True))


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How many positions picked each code (K floats).

    ``index_add_`` rather than ``bincount``: on CUDA, bincount reads the largest index back to the
    host, a device synchronisation per step.
    """
    flat = indices.reshape(-1)
    ones = torch.ones((), device=flat.device).expand(flat.numel())
    return torch.zeros(codebook_size, device=flat.device).index_add_(0, flat, ones)


def batch_code_stats(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batch ``perplexity`` exp(-Σ p log p) and ``usage`` (fraction of codes picked) from code counts.

    Tensors, not floats, so logging them costs no device synchronisation.
    """
    probs = counts / counts.sum().clamp_min(1)
    entropy = -torch.special.xlogy(probs, probs).sum()
    return {"perplexity": entropy.exp(), "usage": (counts > 0).float().mean()}


class _SplitSquaredError(torch.autograd.Function):
    """w_q·mean((z_q - sg z)²) + w_z·mean((sg z_q - z)²) from one precomputed difference z_q - z.

    Both terms have the same value; they differ only in which side their gradient reaches. One
    pass over the difference gives the value, and backward scales it once per side.
    """

    @staticmethod
    def forward(ctx, z_q, z, difference, codebook_weight: float, commitment_weight: float):
        ctx.save_for_backward(difference)
        ctx.weights = (codebook_weight, commitment_weight)
        values = difference.reshape(-1)
        return torch.dot(values, values) * ((codebook_weight + commitment_weight) / values.numel())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (difference,) = ctx.saved_tensors
        codebook_weight, commitment_weight = ctx.weights
        scale = grad * (2.0 / difference.numel())
        grad_codes = difference * (scale * codebook_weight) if ctx.needs_input_grad[0] else None
        grad_latents = difference * (-scale * commitment_weight) if ctx.needs_input_grad[1] else None
        return grad_codes, grad_latents, None, None, None


def split_squared_error(
    z_q: torch.Tensor,
    z: torch.Tensor,
    difference: torch.Tensor,
    codebook_weight: float,
    commitment_weight: float,
) -> torch.Tensor:
    """The VQ loss ``codebook_weight·||z_q - sg(z)||² + commitment_weight·||sg(z_q) - z||²`` (means).

    ``difference`` must equal ``z_q - z`` (detached) and have their shape.
    """
    return _SplitSquaredError.apply(z_q, z, difference, float(codebook_weight), float(commitment_weight))


class _QuantizeStraightThrough(torch.autograd.Function):
    """Gather the codes, ``quant = z + sg(z_q - z)`` and the split VQ loss, in one autograd node.

    Everything reuses one difference z_q - z, built in place in the gathered codes (``(b h w) d``)
    and transposed once into z's own layout (b d h w): ``quant``, the loss and the latents'
    gradient then read it contiguously, and the codebook's gradient is one ``index_add_`` of the
    row copy into K×D. One transpose costs what each strided read of the rows would, and there
    were two (``quant``, the latents' gradient).
    """

    @staticmethod
    def forward(ctx, z, codebook, flat, indices, codebook_weight: float, commitment_weight: float):
        ctx.set_materialize_grads(False)
        grid = (z.shape[0], z.shape[2], z.shape[3])
        difference = codebook.index_select(0, indices).sub_(flat)  # (b h w) d
        difference_map = unflatten_codes(difference, *grid).contiguous()  # b d h w
        ctx.save_for_backward(difference, difference_map, indices)
        ctx.weights = (codebook_weight, commitment_weight)
        ctx.codebook_shape = codebook.shape
        values = difference_map.view(-1)
        loss = torch.dot(values, values) * ((codebook_weight + commitment_weight) / values.numel())
        quant = z + difference_map  # b d h w
        return quant, loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_quant, grad_loss):
        difference, difference_map, indices = ctx.saved_tensors
        codebook_weight, commitment_weight = ctx.weights
        grad_latents = grad_codebook = None
        if grad_loss is None:
            if ctx.needs_input_grad[0]:
                grad_latents = grad_quant
            return grad_latents, None, None, None, None, None
        scale = grad_loss * (2.0 / difference.numel())
        if ctx.needs_input_grad[0]:
            if grad_quant is None:
                grad_latents = difference_map * (-commitment_weight * scale)
            else:
                grad_latents = torch.addcmul(grad_quant, difference_map, scale, value=-commitment_weight)
        if ctx.needs_input_grad[1] and codebook_weight != 0:
            grad_codebook = difference.new_zeros(ctx.codebook_shape).index_add_(0, indices, difference)
            grad_codebook.mul_(scale * codebook_weight)  # k d
        return grad_latents, grad_codebook, None, None, None, None


def quantize_straight_through(
    z: torch.Tensor,
    codebook: torch.Tensor,
    flat: torch.Tensor,
    indices: torch.Tensor,
    codebook_weight: float,
    commitment_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(quant, loss) for latents ``z`` (B×D×h×w) whose ``(b h w) d`` copy ``flat`` picked ``indices``.

    quant = z + sg(e[indices] - z) (B×D×h×w); loss = codebook_weight·||z_q - sg z||² +
    commitment_weight·||sg z_q - z||² (means). Gradients: upstream + commitment part to ``z``,
    codebook part to ``codebook`` (K×D); ``flat`` needs no graph.
    """
    return _QuantizeStraightThrough.apply(
        z, codebook, flat.detach(), indices, float(codebook_weight), float(commitment_weight)
    )


def lookup_codes(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Codes of ``indices`` (B×h×w) as B×D×h×w."""
    if indices.dim() != 3:
        raise ValueError(f"expected indices of shape B×h×w, got {tuple(indices.shape)}")
    return F.embedding(indices, codebook).permute(0, 3, 1, 2).contiguous()
