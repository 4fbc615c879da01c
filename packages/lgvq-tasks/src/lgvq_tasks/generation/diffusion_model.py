"""``text-to-image``: VQ-Diffusion's discrete diffusion over a frozen tokenizer's codes (the paper's Table 5).

A bidirectional transformer reads x_t (``b n``, K codes and [MASK]) and predicts log p(x0 | x_t, text)
over the K codes. Each block is AdaLN(t) -> self-attention -> AdaLN(t) -> cross-attention to the
projected text token states -> LayerNorm -> GELU MLP 4x. Training minimises the variational bound
with importance-sampled t plus the auxiliary x0 term; sampling starts from all [MASK] and steps back
with the posterior of :mod:`.discrete_diffusion`, optionally skipping steps, truncating p(x0) to its
top-r mass and guiding with a learned null text in log-probability space.

Batch keys: ``codes`` (``b h w``), ``text_states`` (``b L W``), ``text_pad`` (``b L``, True at real tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.api import FrozenTokenizer, SampleConditions
from lgvq_tasks.generation.conditions import TextCondition, dropped, require, with_text_sizes
from lgvq_tasks.generation.config import TextToImageConfig
from lgvq_tasks.generation.discrete_diffusion import (
    LOG_ZERO,
    MaskAndReplaceSchedule,
    TimeSampler,
    categorical,
    categorical_kl,
    sampling_times,
)
from lgvq_tasks.generation.sampling import filter_logits, guided_logits, sampling_settings
from lgvq_tasks.generation.transformer import MLP
from lgvq_tasks.generation.weight_decay import linear_weight_decay_groups

NAME = "text-to-image"


def timestep_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps, ``b -> b width``."""
    half = width // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angles = t.float()[:, None] * frequencies[None]
    embedding = torch.cat([angles.sin(), angles.cos()], -1)
    return F.pad(embedding, (0, width - 2 * half))


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm whose scale and shift come from the step: ln(x) (1 + scale(t)) + shift(t)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(step)[:, None].chunk(2, -1)  # b 1 d each
        return self.norm(x) * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention of queries ``b n d`` to a context ``b m d`` (itself for self-attention)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"{NAME}: width {width} must be divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q = self.query(x).view(b, n, self.heads, -1).transpose(1, 2)  # b h n e
        k, v = self.key_value(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]  # b 1 1 m
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiffusionBlock(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_self = AdaptiveLayerNorm(width)
        self.self_attention = Attention(width, heads, dropout)
        self.norm_cross = AdaptiveLayerNorm(width)
        self.cross_attention = Attention(width, heads, dropout)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, x, step, text, keep):
        h = self.norm_self(x, step)
        x = x + self.self_attention(h, h)
        x = x + self.cross_attention(self.norm_cross(x, step), text, keep)
        return x + self.mlp(self.norm_mlp(x))


class TextToImageDiffusion(nn.Module):
    """VQ-Diffusion over codes, conditioned on cached text token states."""

    def __init__(self, config: TextToImageConfig, tokenizer: FrozenTokenizer):
        super().__init__()
        if tokenizer.indices_per_position != 1:
            raise ValueError(f"{NAME}: needs one code per position, the tokenizer has {tokenizer.indices_per_position}")
        self.config = config
        self.codebook_size = k = tokenizer.codebook_size
        self.mask_token = k
        self.grid = tuple(tokenizer.grid)
        self.sequence_length = n = tokenizer.sequence_length
        self.schedule = MaskAndReplaceSchedule(k, config.steps, config.alpha_cumulative, config.gamma_cumulative)
        self.time_sampler = TimeSampler(config.steps, config.importance_sampling)
        width = config.width
        self.token_embedding = nn.Embedding(k + 1, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, n, width))
        self.step_embedding = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text = TextCondition(config.text_width, config.text_length, width, NAME)
        self.blocks = nn.ModuleList(DiffusionBlock(width, config.heads, config.dropout) for _ in range(config.layers))
        self.norm_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, k)
        nn.init.normal_(self.position_embedding, std=0.02)

    # ---- the x0 predictor ------------------------------------------------------------------------

    def log_x0(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """log p(x0 | x_t, text) over the K codes, ``b n -> b n K`` (float32 or wider)."""
        step = self.step_embedding(timestep_embedding(t, self.config.width).to(self.position_embedding.dtype))
        x = self.token_embedding(x_t) + self.position_embedding  # b n d
        for block in self.blocks:
            x = block(x, step, text, keep)
        logits = self.head(self.norm_final(x))
        return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1).clamp(min=LOG_ZERO)

    def _text(self, batch: dict, null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, keep = self.text.states(batch, null)
        if not bool(keep.any(-1).all()):
            raise ValueError(f"{NAME}: a caption has no real token (text_pad all False); drop it from the data")
        return self.text(states), keep

    def flat_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if tuple(codes.shape[1:]) != self.grid:
            raise ValueError(f"{NAME}: codes must be b x {self.grid[0]} x {self.grid[1]}, got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"{NAME}: codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]; "
                "the code cache does not belong to this tokenizer"
            )
        return codes.reshape(codes.shape[0], -1).long()

    # ---- training --------------------------------------------------------------------------------

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """VLB term L_t / p_t plus the auxiliary x0 term, per code; also the plain L_t and -log p(x0|x_t).

        L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) summed over codes for t >= 2, and the decoder
        term -log p(x0 | x_1) for t = 1. The auxiliary term is -log p(x0 | x_t), weighted by
        ``auxiliary_weight`` (x ((1 - t/T) + 1) when adaptive).
        """
        x0 = self.flat_codes(require(batch, "codes", NAME, "the cached codes of the tokenizer"))
        b, device = x0.shape[0], x0.device
        generator = batch.get("generator")
        t, p_t = self.time_sampler.sample(b, generator, device)
        x_t = self.schedule.sample_forward(x0, t, generator)
        null = dropped(b, self.config.condition_dropout if self.training else 0.0, generator, device)
        text, keep = self._text(batch, null)
        log_x0_pred = self.log_x0(x_t, t, text, keep)  # b n K
        log_model = self.schedule.posterior_log_probs(log_x0_pred, x_t, t)  # b n C
        one_hot = torch.full_like(log_x0_pred, LOG_ZERO).scatter(-1, x0[..., None], 0.0)
        log_true = self.schedule.posterior_log_probs(one_hot, x_t, t)
        kl = categorical_kl(log_true, log_model).sum(-1)  # b
        x0_nll = -log_x0_pred.gather(-1, x0[..., None])[..., 0].sum(-1)  # b; = KL(one-hot x0 || p(x0|x_t))
        first = t == 1
        vlb = torch.where(first, x0_nll, kl)
        if self.training:
            self.time_sampler.update(t, vlb)
        weight = self.config.auxiliary_weight
        if self.config.adaptive_auxiliary:
            weight = weight * ((1 - t.double() / self.config.steps) + 1)
        loss = (vlb + weight * x0_nll) / p_t  # b
        n = self.sequence_length
        return {
            "loss": loss.mean().float() / n,
            "vlb_term": vlb.detach().mean() / n,
            "x0_nll": x0_nll.detach().mean() / n,
        }

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on Linear weights only."""
        return linear_weight_decay_groups(self, weight_decay)

    # ---- sampling --------------------------------------------------------------------------------

    def guided_log_x0(
        self, x_t, t, condition: dict | None, rows: int, guidance_scale: float, truncation: float | None
    ) -> torch.Tensor:
        """log p(x0 | x_t) with guidance in log space (u + s (c - u), renormalised) and top-r truncation."""
        null_rows = torch.ones(rows, dtype=torch.bool, device=x_t.device)
        if condition is None:
            text, keep = self.text.null(rows)
            log_x0 = self.log_x0(x_t, t, self.text(text), keep)
        elif guidance_scale == 1.0:
            log_x0 = self.log_x0(x_t, t, *self._text(condition, ~null_rows))
        else:  # one doubled batch: conditional rows, then null rows
            text_c, keep_c = self._text(condition, ~null_rows)
            null_text, null_keep = self.text.null(rows)
            both = self.log_x0(
                x_t.repeat(2, 1), t.repeat(2), torch.cat([text_c, self.text(null_text)]), torch.cat([keep_c, null_keep])
            )
            log_x0 = guided_logits(both[:rows], both[rows:], guidance_scale).log_softmax(-1)
        if truncation is not None and truncation < 1.0:
            log_x0 = filter_logits(log_x0, top_p=truncation).log_softmax(-1)
        return log_x0.clamp(min=LOG_ZERO)

    #: Options of :meth:`generate` (defaults: the config's sampling options).
    SAMPLING_OPTIONS = ("steps", "truncation", "guidance_scale")

    def sample_conditions(self, batch: dict) -> SampleConditions:
        """The caption of each row of ``batch``, for the panels of a sample grid."""
        return SampleConditions(captions=list(batch.get("text", batch.get("caption", []))))

    @torch.no_grad()
    def generate(self, batch: dict, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """Codes ``b h w`` for the captions of ``batch`` (its ``text_states`` and ``text_pad``)."""
        settings = self.effective_sampling(**options)
        condition = {
            k: require(batch, k, NAME, "generate() needs the captions' text states")
            for k in ("text_states", "text_pad")
        }
        return self.sample(condition=condition, generator=generator, **settings)

    def effective_sampling(self, **options) -> dict:
        """The sampling options :meth:`generate` uses: ``options`` over the config's."""
        defaults = {
            "steps": self.config.sample_steps or self.config.steps,
            "truncation": self.config.truncation,
            "guidance_scale": self.config.guidance_scale,
        }
        return sampling_settings(NAME, defaults, options)

    @torch.no_grad()
    def sample(
        self,
        condition: dict | None = None,
        count: int | None = None,
        steps: int | None = None,
        truncation: float | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Codes ``b h w`` from all-[MASK] in ``steps`` model evaluations (default: the config's options).

        ``condition`` holds ``text_states`` and ``text_pad`` (None: the null text, ``count`` rows).
        """
        steps = (self.config.sample_steps or self.config.steps) if steps is None else steps
        truncation = self.config.truncation if truncation is None else truncation
        guidance_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        if condition is not None:
            rows = require(condition, "text_states", NAME, "sampling with a caption").shape[0]
        elif count is None or count <= 0:
            raise ValueError(f"{NAME}: give a positive sample count when there is no caption, got {count!r}")
        else:
            rows = count
        device = self.position_embedding.device
        x = torch.full((rows, self.sequence_length), self.mask_token, dtype=torch.long, device=device)
        times = sampling_times(self.config.steps, steps)
        for index, step in enumerate(times):
            t = torch.full((rows,), step, dtype=torch.long, device=device)
            log_x0 = self.guided_log_x0(x, t, condition, rows, guidance_scale, truncation)
            following = times[index + 1] if index + 1 < len(times) else 0
            if following == 0:
                x = categorical(log_x0, generator)
            else:
                log_probs = self.schedule.posterior_log_probs(log_x0, x, t, torch.full_like(t, following))
                x = categorical(log_probs, generator)
        return x.view(rows, *self.grid)


def build_text_to_image(config: TextToImageConfig, context) -> TextToImageDiffusion:
    """Factory of the ``text-to-image`` downstream model (text sizes from the run's text encoder)."""
    return TextToImageDiffusion(with_text_sizes(config, context.text_encoder, NAME), context.frozen_tokenizer)
