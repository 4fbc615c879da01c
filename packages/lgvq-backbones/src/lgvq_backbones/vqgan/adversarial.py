"""VQ-GAN's adversarial pieces: discriminator losses and the adaptive generator weight (docs/method.md: VQ-GAN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """½ (mean ReLU(1 - D(x)) + mean ReLU(1 + D(x̂)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """½ (mean softplus(-D(x)) + mean softplus(D(x̂))): the non-saturating GAN loss."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def adaptive_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """‖∇_last rec_loss‖ / (‖∇_last g_loss‖ + 1e-4), clamped to [0, max_weight] and detached.

    Balances the adversarial gradient against the reconstruction gradient at the decoder's last
    layer. Without a graph (validation, ``torch.no_grad``) it is 0, as taming's is.
    """
    if not (torch.is_grad_enabled() and rec_loss.requires_grad and g_loss.requires_grad):
        return torch.zeros((), device=rec_loss.device)
    (rec_grads,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grads,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (rec_grads.norm() / (g_grads.norm() + 1e-4)).clamp(0.0, max_weight).detach()
