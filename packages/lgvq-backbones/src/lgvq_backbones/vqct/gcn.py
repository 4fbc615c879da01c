"""VQCT's codebook generator: a two-layer graph convolutional network in plain torch (docs/method.md: VQCT).

Kipf & Welling's propagation ``H' = Â H W + b`` with ``Â = D̃^-½ (A + I) D̃^-½`` (self-loops added,
symmetric normalisation, ``D̃`` the row sums of ``A + I``), as torch_geometric's ``GCNConv`` computes
it. ``Â`` is a sparse tensor applied with ``torch.sparse.mm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalized_adjacency(edge_index: torch.Tensor, edge_weight: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``D̃^-½ (A + I) D̃^-½`` as a sparse COO tensor (num_nodes × num_nodes).

    ``edge_index`` (2×M) lists directed edges ``(row, col)`` with weights ``edge_weight`` (M); give
    both directions for an undirected graph. Repeated edges add up; self-loops of weight 1 are added.
    """
    loops = torch.arange(num_nodes, device=edge_index.device)
    rows = torch.cat([edge_index[0], loops])
    cols = torch.cat([edge_index[1], loops])
    weights = torch.cat([edge_weight.float(), torch.ones(num_nodes, device=edge_weight.device)])
    degree = torch.zeros(num_nodes, device=weights.device).index_add_(0, rows, weights)  # D̃
    inv_sqrt = degree.rsqrt()
    values = inv_sqrt[rows] * weights * inv_sqrt[cols]
    adjacency = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (num_nodes, num_nodes), check_invariants=False
    )  # indices are in range by construction
    return adjacency.coalesce()


class GCN(nn.Module):
    """``H₂ = Â · dropout(ReLU(Â X W₁ + b₁)) · W₂ + b₂``.

    Weights are Glorot-uniform and biases zero, like ``GCNConv``. Dropout acts in training mode only.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, hidden_dim)
        self.second = nn.Linear(hidden_dim, out_dim)
        self.dropout = dropout
        for layer in (self.first, self.second):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    @staticmethod
    def _propagate(adjacency: torch.Tensor, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        # Â (X W) + b: the same as (Â X) W + b, and cheaper when the input is wider than the output.
        return torch.sparse.mm(adjacency, x @ layer.weight.t()) + layer.bias

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor, dropout: bool | None = None) -> torch.Tensor:
        """Node features ``x`` (nodes × in_dim) -> codes (nodes × out_dim).

        ``dropout`` overrides the module's mode (``None``: drop only in training mode).
        """
        active = self.training if dropout is None else dropout
        hidden = F.relu(self._propagate(adjacency, x, self.first))
        hidden = F.dropout(hidden, self.dropout, training=active)
        return self._propagate(adjacency, hidden, self.second)
