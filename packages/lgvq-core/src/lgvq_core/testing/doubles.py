"""Test doubles: a tiny autoencoder backbone and a tiny frozen text encoder."""

from __future__ import annotations

import hashlib
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.testing.config import TinyAutoencoderConfig, TinyTextConfig
from lgvq_core.text_encoder import TextEncoder
from lgvq_core.tokenizer import Tokenizer, TokenizerOutput

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class TinyText(TextEncoder):
    """Words hashed into a fixed vocabulary; one frozen random attention layer on top."""

    def __init__(self, config: TinyTextConfig) -> None:
        super().__init__()
        self.config = config
        self.width = self.embed_dim = config.width
        self.vocab_size = config.vocab_size
        self.context_length = config.context_length
        self.causal = config.causal
        self.padding_invisible = True  # padding keys are masked
        self.pad_id, self.bos_id, self.eos_id, self.mask_placeholder_id = 0, 1, 2, 3
        self.identity = (
            f"tiny-text(width={config.width},vocab={config.vocab_size},causal={config.causal},"
            f"seed={config.seed},L={config.context_length})"
        )
        generator = torch.Generator().manual_seed(config.seed)
        self.embedding = nn.Embedding(config.vocab_size, config.width)
        self.positions = nn.Parameter(torch.empty(config.context_length, config.width))
        self.attention = nn.MultiheadAttention(config.width, 1, batch_first=True)
        self.norm = nn.LayerNorm(config.width)
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if parameter.dim() > 1:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * parameter.shape[-1] ** -0.5)
                elif name.endswith("weight"):  # LayerNorm scale
                    parameter.fill_(1.0)
                else:
                    parameter.zero_()
            self.positions.copy_(torch.randn(self.positions.shape, generator=generator) * 0.1)
        self.freeze()

    @property
    def token_embedding(self) -> torch.Tensor:
        return self.embedding.weight

    def _word_id(self, word: str) -> int:
        digest = hashlib.sha1(word.encode()).digest()
        return 4 + int.from_bytes(digest[:4], "little") % (self.vocab_size - 4)

    def tokenize(self, captions: list[str]):
        length = self.context_length
        ids = torch.full((len(captions), length), self.pad_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            words = [self._word_id(w) for w in _WORD.findall(caption.lower())][: length - 2]
            tokens = [self.bos_id, *words, self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        _, pad_mask, word_mask = self._masks_from_ids(ids)
        return ids, pad_mask, word_mask

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, pad_mask: torch.Tensor):
        x = self.embedding(ids) + self.positions[: ids.shape[1]]
        length = ids.shape[1]
        mask = None
        if self.causal:
            mask = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)
        attended, _ = self.attention(x, x, x, key_padding_mask=~pad_mask, attn_mask=mask, need_weights=False)
        states = self.norm(x + attended)
        weights = pad_mask.unsqueeze(-1).to(states.dtype)
        sentence = F.normalize((states * weights).sum(1) / weights.sum(1).clamp_min(1), dim=-1)
        return states, sentence


def build_tiny_text(config: TinyTextConfig, context=None) -> TinyText:
    return TinyText(config)


class _TinyDiscriminator(nn.Module):
    def __init__(self, hidden: int, in_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, 1, 3, 1, 1)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class TinyAutoencoder(Tokenizer):
    """conv stride-2 stages -> quantizer -> transposed convs; MSE (+ hinge GAN) loss."""

    def __init__(self, config: TinyAutoencoderConfig, quantizer: nn.Module, in_channels: int = 3) -> None:
        super().__init__()
        stages = max(1, config.downsample.bit_length() - 1)
        if 2**stages != config.downsample:
            raise ValueError(f"downsample must be a power of 2, got {config.downsample}")
        self.config = config
        self.quantizer = quantizer
        self.code_dim = quantizer.dim
        self.downsample = config.downsample
        self.in_channels = in_channels
        h = config.hidden
        down: list[nn.Module] = [nn.Conv2d(in_channels, h, 3, 1, 1)]
        for _ in range(stages):
            down += [nn.ReLU(), nn.Conv2d(h, h, 4, 2, 1)]
        self.encoder = nn.Sequential(*down, nn.ReLU(), nn.Conv2d(h, self.code_dim, 1))
        up: list[nn.Module] = [nn.Conv2d(self.code_dim, h, 3, 1, 1)]
        for _ in range(stages):
            up += [nn.ReLU(), nn.ConvTranspose2d(h, h, 4, 2, 1)]
        self.decoder = nn.Sequential(*up, nn.ReLU(), nn.Conv2d(h, in_channels, 3, 1, 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(quant)

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        return super().forward(images)

    def discriminator_active(self, step: int) -> bool:
        return self.config.adversarial and step >= self.config.disc_start

    def make_discriminator(self) -> nn.Module | None:
        return _TinyDiscriminator(self.config.hidden, self.in_channels) if self.config.adversarial else None

    def generator_loss(self, images, output, step, discriminator):
        rec = F.mse_loss(output.recon, images)
        terms = {"rec_loss": rec, "quantizer_loss": output.quantizer_loss}
        total = rec + output.quantizer_loss
        if discriminator is not None and self.discriminator_active(step):
            g_loss = -discriminator(output.recon).mean()
            terms["g_loss"] = g_loss
            total = total + self.config.disc_weight * g_loss
        terms["total"] = total
        return terms

    def discriminator_loss(self, images, recon, step, discriminator):
        real = discriminator(images)
        fake = discriminator(recon)
        d_loss = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
        return {"total": d_loss, "d_loss": d_loss}


def build_tiny_autoencoder(config: TinyAutoencoderConfig, context) -> TinyAutoencoder:
    if context is None or context.quantizer is None:
        raise ValueError("tiny-ae needs a quantizer in the build context")
    return TinyAutoencoder(config, context.quantizer, getattr(context, "in_channels", 3))


class TinyPrior(nn.Module):
    """Predicts each code from the previous one (and the mean text state): the downstream contract, tiny."""

    def __init__(self, config, tokenizer, text_width: int | None = None) -> None:
        super().__init__()
        size = tokenizer.codebook_size
        self.start = size  # its own token, past the codebook
        self.embed = nn.Embedding(size + 1, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.text = nn.Linear(text_width, config.width) if config.text else None
        self.head = nn.Linear(config.width, size)

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        codes = batch["codes"].flatten(1)  # b (h w)
        inputs = torch.cat([torch.full_like(codes[:, :1], self.start), codes[:, :-1]], dim=1)
        hidden = self.dropout(self.embed(inputs))
        if self.text is not None:
            states = batch["text_states"].float() * batch["text_pad"].unsqueeze(-1)
            mean = states.sum(1) / batch["text_pad"].sum(1, keepdim=True).clamp_min(1)
            hidden = hidden + self.text(mean).unsqueeze(1)
        loss = nn.functional.cross_entropy(self.head(hidden).flatten(0, 1).float(), codes.flatten())
        return {"loss": loss, "bits_per_code": loss.detach() / math.log(2)}

    def param_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for n, p in self.named_parameters() if n.endswith("weight") and p.dim() == 2 and "embed" not in n]
        rest = [p for n, p in self.named_parameters() if not any(p is d for d in decay)]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_tiny_prior(config, context) -> TinyPrior:
    width = context.text_encoder.width if context.text_encoder is not None else None
    if config.text and width is None:
        raise ValueError("tiny-prior with text = true needs a text encoder")
    return TinyPrior(config, context.frozen_tokenizer, width)
