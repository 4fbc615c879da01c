"""The quantizer contract (paper Eq. 1-2; docs/method.md: Quantizers and β placement)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lgvq_core.contracts import ContractError, require_finite_scalar, require_instance


@dataclass
class QuantizerOutput:
    """What a quantizer returns for ``z`` (B×D×h×w).

    ``quant``: straight-through codes, ``z + sg(z_q - z)`` (B×D×h×w) — every LG loss reads this.
    ``indices``: code indices, B×h×w (or B×k×h×w for quantizers that pick k codes per position).
    ``loss``: the quantizer's loss term (scalar).
    ``stats``: detached scalars for logging (``perplexity``, ``usage`` of this batch, ...).
    """

    quant: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Maps encoder latents to codes.

    Subclasses set ``codebook_size`` (K) and ``dim`` (D) and implement :meth:`forward`,
    :attr:`codebook` and :meth:`decode_indices`.
    """

    codebook_size: int
    dim: int
    #: Codes picked per latent position (indices B×h×w when 1, B×k×h×w when k > 1). Tasks that
    #: read one code per position (``relation``, ``codebook``) refuse a quantizer with more.
    codes_per_position: int = 1

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def codebook(self) -> torch.Tensor:
        """The K×D code vectors actually used for lookup."""
        raise NotImplementedError

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``indices`` (B×h×w, or B×k×h×w) as a B×D×h×w tensor."""
        raise NotImplementedError


def index_problem(indices: torch.Tensor, codebook_size: int) -> str | None:
    """What is wrong with a quantizer's indices (dtype, range), or None: the contract's rule."""
    if indices.dtype != torch.long:
        return f"indices have dtype {indices.dtype}; they index the codebook and must be torch.long"
    if indices.numel() == 0:
        return None
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= codebook_size:
        return (
            f"indices range over [{low}, {high}] but codebook_size is {codebook_size}: every index must be in "
            f"[0, {codebook_size})"
        )
    return None


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Codebook ``usage`` (fraction of codes used) and ``perplexity`` from code counts over a split."""
    total = counts.sum()
    if total <= 0:
        return {"usage": 0.0, "perplexity": 0.0}
    probs = counts.double() / total
    nonzero = probs[probs > 0]
    entropy = -(nonzero * nonzero.log()).sum().item()
    return {"usage": float((counts > 0).double().mean()), "perplexity": math.exp(entropy)}


def check_quantizer(quantizer: Quantizer) -> None:
    """The quantizer contract, on a 2×D×4×4 input: shapes, index dtype and range, codebook, decode
    round trip, gradient through ``quant``, determinism in eval mode."""
    require_instance(quantizer, Quantizer)
    size, dim = int(quantizer.codebook_size), int(quantizer.dim)
    z = torch.randn(2, dim, 4, 4, requires_grad=True)
    out = quantizer(z)
    if out.quant.shape != z.shape:
        raise ContractError(f"quant has shape {tuple(out.quant.shape)}, z had {tuple(z.shape)}")
    indices = out.indices
    if indices.shape[0] != 2 or tuple(indices.shape[-2:]) != (4, 4) or indices.dim() not in (3, 4):
        raise ContractError(f"indices have shape {tuple(indices.shape)}; expected B×h×w or B×k×h×w")
    problem = index_problem(indices, size)
    if problem is not None:
        raise ContractError(problem)
    require_finite_scalar(out.loss, "the quantizer loss")
    try:
        codebook = quantizer.codebook
    except Exception as exc:  # noqa: BLE001 - a missing or broken property is the finding
        raise ContractError(f"the codebook property fails: {type(exc).__name__}: {exc}") from exc
    if not isinstance(codebook, torch.Tensor) or tuple(codebook.shape) != (size, dim):
        shape = tuple(codebook.shape) if isinstance(codebook, torch.Tensor) else type(codebook).__name__
        raise ContractError(
            f"codebook is {shape}; expected a (codebook_size, dim) = ({size}, {dim}) tensor (the relation "
            "loss and the codebook statistics read it)"
        )
    if not out.quant.requires_grad:
        raise ContractError("quant carries no gradient: use the straight-through z + (z_q - z).detach()")
    out.quant.pow(2).sum().backward()
    if z.grad is None or not bool(z.grad.abs().sum() > 0):
        raise ContractError("no gradient reaches z through quant: use the straight-through z + (z_q - z).detach()")
    # In eval mode nothing updates the codebook (EMA, re-anchoring), so the codes can be compared.
    quantizer.eval()
    with torch.no_grad():
        probe = torch.randn(2, dim, 4, 4)
        first, second = quantizer(probe), quantizer(probe)
        decoded = quantizer.decode_indices(first.indices)
    if decoded.shape != first.quant.shape:
        raise ContractError(f"decode_indices gives {tuple(decoded.shape)}, quant is {tuple(first.quant.shape)}")
    if not torch.allclose(decoded, first.quant, atol=1e-4, rtol=1e-4):
        error = float((decoded - first.quant).abs().max())
        raise ContractError(
            f"decode_indices(indices) differs from quant by up to {error:.3g} (eval mode): the codes a downstream "
            "model decodes are not the codes the tokenizer trained on"
        )
    if not torch.equal(first.indices, second.indices) or not torch.equal(first.quant, second.quant):
        raise ContractError("two calls in eval mode on the same input give different codes; eval must be deterministic")
