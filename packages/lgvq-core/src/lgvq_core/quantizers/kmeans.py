"""k-means initialisation of a codebook from one batch of latents.

A small-scale lever against codebook collapse, not part of the official method (docs/method.md:
Quantizers and β placement): codes that start where the latents are get picked from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lgvq_core.quantizers.distributed import from_rank_zero
from lgvq_core.quantizers.lookup import code_counts, nearest_codes


@torch.no_grad()
def kmeans(
    flat: torch.Tensor, codebook_size: int, iterations: int, spherical: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """K centres of the rows of ``flat`` ((b h w) d) by Lloyd's algorithm, and the size of each cluster.

    The centres start on K rows drawn from torch's global random stream (without replacement when
    there are at least K rows, with replacement otherwise). Each iteration assigns every row to its
    nearest centre by the quantizers' own lookup (squared L2) and moves every centre to the mean of
    its rows, normalised when ``spherical`` (the cosine quantizer compares unit vectors); a centre
    that holds no row stays where it is. The sizes are those of the last assignment, whose means the
    centres are. Only the iterations loop: each one is an n×K score matmul and two ``index_add_``.

    Under ``torch.distributed`` every rank clusters its own batch (so every rank draws the same
    amount of random numbers) and all keep rank 0's centres and sizes.
    """
    rows, width = flat.shape
    if rows >= codebook_size:
        start = torch.randperm(rows, device=flat.device)[:codebook_size]
    else:
        start = torch.randint(rows, (codebook_size,), device=flat.device)
    centres = flat[start]  # k d
    sizes = flat.new_zeros(codebook_size)
    for _ in range(iterations):
        assigned = nearest_codes(flat, centres)  # (b h w)
        sizes = code_counts(assigned, codebook_size).to(flat.dtype)  # k
        sums = flat.new_zeros(codebook_size, width).index_add_(0, assigned, flat)  # k d
        means = sums / sizes.clamp_min(1.0)[:, None]
        if spherical:
            means = F.normalize(means, dim=1)
        centres = torch.where(sizes[:, None] > 0, means, centres)
    # k (d + 1): centres and sizes travel together, one broadcast
    shared = from_rank_zero(torch.cat([centres, sizes[:, None]], dim=1))
    return shared[:, :width], shared[:, width]
