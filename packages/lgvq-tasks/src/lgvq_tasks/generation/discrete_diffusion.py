"""The mask-and-replace discrete diffusion of VQ-Diffusion (Gu et al. 2022, Sec. 3), in log space.

States are the K codes and [MASK] (index K), ``C = K + 1`` classes. One forward step keeps a code
with probability alpha_t + beta_t, replaces it by any given other code with beta_t, masks it with
gamma_t; [MASK] stays [MASK]. Steps compose within the same family, so from step s to step t
(s < t, step 0 the data):

    alpha_{s->t} = abar_t / abar_s,   1 - gamma_{s->t} = (1 - gbar_t) / (1 - gbar_s),
    beta_{s->t} = (1 - alpha_{s->t} - gamma_{s->t}) / K,

with abar_t, gbar_t linear in t from (0.99999, 9e-6) at t = 1 to (9e-6, 0.99999) at t = T. The
model predicts p(x0 | x_t); the reverse step marginalises the true posterior over that prediction:

    p(x_s | x_t) = q(x_t | x_s) sum_x0 q(x_s | x0) p(x0 | x_t) / q(x_t | x0),

which is normalised by construction (and renormalised here against round-off). With a one-hot x0
it is the true posterior q(x_s | x_t, x0). Probabilities enter logs clamped at ``LOG_ZERO``.
"""

from __future__ import annotations

import torch
from torch import nn

#: log of "zero probability": e^-70 ~ 4e-31, finite so that KL terms never meet 0 x inf.
LOG_ZERO = -70.0


def safe_log(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp(min=1e-30).log().clamp(min=LOG_ZERO)


class MaskAndReplaceSchedule(nn.Module):
    """Cumulative keep / mask probabilities of steps ``0..T`` and the transitions between any two steps."""

    def __init__(
        self,
        codebook_size: int,
        steps: int = 100,
        alpha_cumulative: tuple[float, float] = (0.99999, 9e-6),
        gamma_cumulative: tuple[float, float] = (9e-6, 0.99999),
    ):
        super().__init__()
        self.codebook_size, self.steps = codebook_size, steps
        fraction = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1).double()
        alpha_bar = alpha_cumulative[0] + fraction * (alpha_cumulative[1] - alpha_cumulative[0])
        gamma_bar = gamma_cumulative[0] + fraction * (gamma_cumulative[1] - gamma_cumulative[0])
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar])  # T+1, step 0 is the data
        gamma_bar = torch.cat([torch.zeros(1, dtype=torch.float64), gamma_bar])
        if bool((alpha_bar + gamma_bar > 1 + 1e-12).any()) or bool((alpha_bar[1:] > alpha_bar[:-1]).any()):
            raise ValueError(
                "diffusion schedule: need abar_t + gbar_t <= 1 with abar decreasing and gbar increasing; got "
                f"alpha_cumulative {alpha_cumulative}, gamma_cumulative {gamma_cumulative}"
            )
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)
        self.register_buffer("gamma_bar", gamma_bar, persistent=False)

    @property
    def beta_bar(self) -> torch.Tensor:
        return ((1 - self.alpha_bar - self.gamma_bar) / self.codebook_size).clamp(min=0)

    def transition(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha, beta, gamma) of q(x_t | x_s), each ``b 1 1`` float64; s = t gives (1, 0, 0)."""
        alpha = self.alpha_bar[t] / self.alpha_bar[s]
        keep_unmasked = (1 - self.gamma_bar[t]) / (1 - self.gamma_bar[s])
        gamma = 1 - keep_unmasked
        beta = ((keep_unmasked - alpha) / self.codebook_size).clamp(min=0)
        return alpha[:, None, None], beta[:, None, None], gamma[:, None, None]

    def forward_probs(self, x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_s) over the C states of x_t, ``b n -> b n C`` (float64)."""
        alpha, beta, gamma = self.transition(s, t)
        k = self.codebook_size
        masked = (x_s == k)[..., None]  # b n 1
        probs = beta.expand(*x_s.shape, k + 1).clone()
        probs[..., k] = gamma[..., 0]
        probs.scatter_add_(-1, x_s.clamp(max=k)[..., None], alpha.expand(*x_s.shape, 1).clone())
        mask_row = torch.zeros_like(probs)
        mask_row[..., k] = 1
        return torch.where(masked, mask_row, probs)

    def log_likelihood(self, x_t: torch.Tensor, s: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """log q(x_t | x_s = c) for every state c, ``b n -> b n C``: the observed x_t's log-likelihood."""
        alpha, beta, gamma = self.transition(s, t)
        k = self.codebook_size
        masked = (x_t == k)[..., None]  # b n 1
        log_gamma = safe_log(gamma).to(dtype)
        log_other = torch.where(masked, log_gamma, safe_log(beta).to(dtype))  # any code c but x_t
        logs = log_other.expand(*x_t.shape, k + 1).clone()
        logs[..., k] = torch.where(masked[..., 0], 0.0, LOG_ZERO)  # [MASK] only ever leads to [MASK]
        log_same = torch.where(masked, log_gamma, safe_log(alpha + beta).to(dtype))  # c = x_t (a code)
        return logs.scatter_(-1, x_t.clamp(max=k - 1)[..., None], log_same)

    def sample_forward(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_t ~ q(x_t | x0), ``b n`` long: masked with gbar_t, else replaced by a uniform code with K bbar_t."""
        uniform = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        replacement = torch.randint(0, self.codebook_size, x0.shape, generator=generator, device=x0.device)
        gamma_bar = self.gamma_bar[t][:, None]
        replace_bar = gamma_bar + self.codebook_size * self.beta_bar[t][:, None]
        x_t = torch.where(uniform < replace_bar, replacement, x0)
        return torch.where(uniform < gamma_bar, torch.full_like(x0, self.codebook_size), x_t)

    def posterior_log_probs(
        self, log_x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x_s | x_t) for a predicted log p(x0 | x_t) (``b n K``), ``b n C``; s defaults to t - 1."""
        s = t - 1 if s is None else s
        k = self.codebook_size
        dtype = torch.promote_types(log_x0.dtype, torch.float32)
        log_x0 = log_x0.to(dtype)
        zero = torch.zeros_like(t)
        log_w = log_x0 - self.log_likelihood(x_t, zero, t, dtype)[..., :k]  # b n K
        total = log_w.logsumexp(-1, keepdim=True)  # b n 1
        alpha_s = safe_log(self.alpha_bar[s])[:, None, None].to(dtype)
        beta_s = safe_log(self.beta_bar[s])[:, None, None].to(dtype)
        gamma_s = safe_log(self.gamma_bar[s])[:, None, None].to(dtype)
        codes = torch.logaddexp(alpha_s + log_w, beta_s + total)  # sum_x0 q(x_s = c | x0) w(x0)
        marginal = torch.cat([codes, gamma_s + total], -1)  # b n C
        log_probs = marginal + self.log_likelihood(x_t, s, t, dtype)
        return (log_probs - log_probs.logsumexp(-1, keepdim=True)).clamp(min=LOG_ZERO)


def categorical(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``... C`` log-probabilities (Gumbel-max)."""
    uniform = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=log_probs.dtype)
    gumbel = -(-uniform.clamp(min=1e-20).log()).clamp(min=1e-20).log()
    return (log_probs + gumbel).argmax(-1)


def categorical_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) over the last axis."""
    return (log_q.exp() * (log_q - log_p)).sum(-1)


class TimeSampler(nn.Module):
    """Importance sampling of t (VQ-Diffusion): uniform until every t has 10 losses, then p_t ~ sqrt(E[L_t^2]).

    The running E[L_t^2] (exponential average, weight 0.1 on the new value) and the counts are buffers,
    so they are checkpointed and resume exactly. t = 1 shares t = 2's weight, as in VQ-Diffusion.
    """

    def __init__(self, steps: int, importance: bool = True, warmup_count: int = 10):
        super().__init__()
        self.steps, self.importance, self.warmup_count = steps, importance, warmup_count
        self.register_buffer("loss_squared", torch.zeros(steps + 1, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(steps + 1, dtype=torch.long))

    def probabilities(self) -> torch.Tensor:
        """p_t over t = 1..T (index 0 is step 1)."""
        uniform = torch.full((self.steps,), 1.0 / self.steps, dtype=torch.float64, device=self.count.device)
        if not self.importance or bool((self.count[1:] <= self.warmup_count).any()):
            return uniform
        weight = (self.loss_squared[1:] + 1e-10).sqrt()
        if self.steps > 1:
            weight[0] = weight[1]
        return weight / weight.sum()

    def sample(self, batch: int, generator: torch.Generator | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        """t (``b``, in 1..T) and its probability p_t (``b``, float64)."""
        probs = self.probabilities()
        draw_on = generator.device if generator is not None else torch.device(device)
        t = torch.multinomial(probs.float().to(draw_on), batch, replacement=True, generator=generator) + 1
        t = t.to(device)
        return t, probs.to(device)[t - 1]

    @torch.no_grad()
    def update(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold per-image losses L_t (``b``) into the running E[L_t^2]."""
        t = t.to(self.count.device)
        new = loss.detach().to(self.loss_squared).pow(2)
        self.loss_squared.scatter_(0, t, 0.1 * new + 0.9 * self.loss_squared.gather(0, t))
        self.count.scatter_add_(0, t, torch.ones_like(t))


def sampling_times(total_steps: int, evaluations: int) -> list[int]:
    """The t of each model evaluation when sampling with ``evaluations`` steps: T down to T / evaluations."""
    if not 1 <= evaluations <= total_steps:
        raise ValueError(f"sampling steps must be in [1, {total_steps}] (the diffusion's T), got {evaluations}")
    return [round(total_steps * (evaluations - i) / evaluations) for i in range(evaluations)]
