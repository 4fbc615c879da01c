"""``code-gpt``: an autoregressive prior over a frozen tokenizer's raster code sequences.

taming's Net2NetTransformer is the reference (pre-LN GPT, GELU MLP 4x, learned positions,
next-token cross-entropy, AdamW (0.9, 0.95) with decay on Linear weights only). The input is
``[condition prefix] [start] z_0 ... z_{N-2}``; the logits at the start token and the codes predict
``z_0 ... z_{N-1}`` over the K codes only. Batch keys: ``codes`` (``b h w``, or ``b k h w`` read in
``h w k`` order), plus ``segmentation`` (semantic grid), ``condition_codes`` (semantic vq) or
``text_states`` + ``text_pad`` (text); see :mod:`.conditions`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.api import FrozenTokenizer, SampleConditions
from lgvq_tasks.generation.conditions import TextCondition, dropped, mode_pool_labels, require, with_text_sizes
from lgvq_tasks.generation.config import CodeGPTConfig
from lgvq_tasks.generation.sampling import draw, filter_logits, guided_logits, sampling_settings
from lgvq_tasks.generation.tokens import TokenLayout
from lgvq_tasks.generation.transformer import CausalTransformer
from lgvq_tasks.generation.weight_decay import linear_weight_decay_groups

NAME = "code-gpt"


class CodeGPT(nn.Module):
    """Decoder-only transformer over code sequences, with a KV-cached sampler."""

    def __init__(self, config: CodeGPTConfig, tokenizer: FrozenTokenizer):
        super().__init__()
        self.config = config
        self.codebook_size = tokenizer.codebook_size
        self.grid = tuple(tokenizer.grid)
        self.indices_per_position = tokenizer.indices_per_position
        self.sequence_length = tokenizer.sequence_length  # N
        condition_vocab, self.prefix_length = self._condition_shape(config, tokenizer)
        self.layout = TokenLayout(self.codebook_size, condition_vocab)
        needed = self.prefix_length + self.sequence_length
        if config.block_size is not None and config.block_size < needed:
            raise ValueError(
                f"{NAME}: block_size {config.block_size} is shorter than the {needed} inputs this condition needs "
                f"({self.prefix_length} condition + 1 start + {self.sequence_length - 1} codes); raise it or unset it"
            )
        self.text = (
            TextCondition(config.text_width, config.text_length, config.width, NAME)
            if config.condition == "text"
            else None
        )
        self.transformer = CausalTransformer(
            vocab=self.layout.size,
            outputs=self.codebook_size,
            width=config.width,
            layers=config.layers,
            heads=config.heads,
            positions=config.block_size or needed,
            dropout=config.dropout,
        )

    @staticmethod
    def _condition_shape(config: CodeGPTConfig, tokenizer: FrozenTokenizer) -> tuple[int, int]:
        """(condition vocabulary C, prefix length P) of the configured condition."""
        if config.condition == "semantic":
            if config.condition_vocab is None:
                raise ValueError(
                    f"{NAME}: condition = 'semantic' needs condition_vocab (label classes for grid, the mask "
                    "autoencoder's codebook size for vq)"
                )
            if config.semantic_source == "grid":
                return config.condition_vocab, tokenizer.grid[0] * tokenizer.grid[1]
            return config.condition_vocab, config.condition_length or tokenizer.sequence_length
        if config.condition == "text":
            return 0, config.text_length
        return 0, 0

    # ---- codes <-> raster sequences -------------------------------------------------------------

    def flat_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``b h w`` (or ``b k h w``) codes as raster sequences ``b N``, checked against the tokenizer."""
        h, w = self.grid
        k = self.indices_per_position
        expected = (h, w) if k == 1 else (k, h, w)
        if tuple(codes.shape[1:]) != expected:
            raise ValueError(f"{NAME}: codes must be b x {' x '.join(map(str, expected))}, got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"{NAME}: codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]; "
                "the code cache does not belong to this tokenizer"
            )
        if k != 1:
            codes = codes.permute(0, 2, 3, 1)  # b k h w -> b h w k
        return codes.reshape(codes.shape[0], -1).long()

    def grid_codes(self, flat: torch.Tensor) -> torch.Tensor:
        """Raster sequences ``b N`` back to ``b h w`` (or ``b k h w``)."""
        h, w = self.grid
        if self.indices_per_position == 1:
            return flat.view(-1, h, w)
        return flat.view(-1, h, w, self.indices_per_position).permute(0, 3, 1, 2)

    # ---- conditions ------------------------------------------------------------------------------

    def condition_prefix(
        self, condition: dict | None, rows: int, null: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prefix embeddings ``b P d`` and their keep mask ``b P`` (None: no padding).

        ``null`` (``b`` booleans, text only) marks rows that get the learned null condition; a missing
        text condition (``condition`` None) means the null condition for every row.
        """
        weight = self.transformer.position_embedding
        config = self.config
        if config.condition == "semantic":
            if condition is None:
                raise ValueError(f"{NAME}: a semantic prior needs a condition to sample from")
            if config.semantic_source == "grid":
                labels = require(condition, "segmentation", NAME, "semantic grid condition")
                values = mode_pool_labels(labels, self.grid, self.layout.condition_vocab).flatten(1)
            else:
                values = require(condition, "condition_codes", NAME, "semantic vq condition").flatten(1).long()
                if values.shape[1] != self.prefix_length:
                    raise ValueError(
                        f"{NAME}: condition_codes hold {values.shape[1]} codes per image, condition_length is "
                        f"{self.prefix_length}; set condition_length to the mask autoencoder's sequence length"
                    )
            tokens = self.layout.condition_tokens(values.to(weight.device), "condition")
            return self.transformer.embed(tokens), None
        if config.condition == "text":
            if condition is None:
                states, keep = self.text.null(rows)
            else:
                if null is None:
                    null = torch.zeros(rows, dtype=torch.bool, device=weight.device)
                states, keep = self.text.states(condition, null)
            return self.text(states), keep
        return weight.new_zeros(rows, 0, weight.shape[2]), None

    # ---- training --------------------------------------------------------------------------------

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy over the codes (``loss``) and the same in bits per code."""
        codes = self.flat_codes(require(batch, "codes", NAME, "the cached codes of the tokenizer"))
        b = codes.shape[0]
        null = None
        if self.text is not None:
            p = self.config.condition_dropout if self.training else 0.0
            null = dropped(b, p, batch.get("generator"), codes.device)
        prefix, keep = self.condition_prefix(batch, b, null)
        start = torch.full((b, 1), self.layout.start, dtype=torch.long, device=codes.device)
        inputs = torch.cat([prefix, self.transformer.embed(torch.cat([start, codes[:, :-1]], 1))], 1)  # b (P+N) d
        logits = self.transformer(inputs, self._full_keep(keep))[:, self.prefix_length :]  # b N K
        loss = F.cross_entropy(logits.reshape(-1, self.codebook_size).float(), codes.reshape(-1))
        return {"loss": loss, "bits_per_code": loss.detach() / math.log(2)}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on Linear weights only (use betas ``GPT_ADAM_BETAS``)."""
        return linear_weight_decay_groups(self, weight_decay)

    def _full_keep(self, keep: torch.Tensor | None) -> torch.Tensor | None:
        if keep is None:
            return None
        return torch.cat([keep, keep.new_ones(keep.shape[0], self.sequence_length)], 1)  # b (P+N)

    # ---- sampling --------------------------------------------------------------------------------

    def _rows(self, condition: dict | None, count: int | None) -> int:
        for key in ("codes", "segmentation", "condition_codes", "text_states"):
            if condition is not None and key in condition:
                return condition[key].shape[0]
        if count is None or count <= 0:
            raise ValueError(f"{NAME}: give a positive sample count when there is no condition, got {count!r}")
        return count

    def _prompt(self, condition, given, rows, guidance_scale):
        """Inputs up to the last given code (``b' s d``), their keep mask and whether rows are doubled for guidance."""
        guided = self.text is not None and condition is not None and guidance_scale != 1.0
        device = self.transformer.position_embedding.device
        if guided:  # one doubled batch: conditional rows, then null rows
            prefix_c, keep_c = self.condition_prefix(condition, rows)
            prefix_u, keep_u = self.condition_prefix(None, rows)
            prefix, keep = torch.cat([prefix_c, prefix_u]), torch.cat([keep_c, keep_u])
        else:
            prefix, keep = self.condition_prefix(condition, rows)
        batch_rows = prefix.shape[0]
        start = torch.full((batch_rows, 1), self.layout.start, dtype=torch.long, device=device)
        tokens = start if given is None else torch.cat([start, given.repeat(batch_rows // rows, 1)], 1)
        inputs = torch.cat([prefix, self.transformer.embed(tokens)], 1)
        return inputs, self._full_keep(keep), guided

    def _guide(self, logits: torch.Tensor, guided: bool, rows: int, scale: float) -> torch.Tensor:
        return guided_logits(logits[:rows], logits[rows:], scale) if guided else logits

    @torch.no_grad()
    def next_logits(
        self,
        condition: dict | None = None,
        given: torch.Tensor | None = None,
        count: int | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Guided logits ``b K`` of the code after ``given`` (``b g`` raster codes; None: the first code)."""
        rows = self._rows(condition, count if given is None else given.shape[0])
        inputs, keep, guided = self._prompt(condition, given, rows, guidance_scale)
        logits = self.transformer(inputs, keep, last_only=True)[:, 0]
        return self._guide(logits, guided, rows, guidance_scale)

    @torch.no_grad()
    def sample(
        self,
        condition: dict | None = None,
        count: int | None = None,
        given: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float = 1.0,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Codes ``b h w`` drawn code by code; the first ``g`` raster codes are ``given`` (``b g``) unchanged.

        ``condition`` holds the condition's batch keys (None: unconditional, or the null text). With
        ``use_cache`` each step evaluates one token against the cached keys and values; without it the
        whole sequence is recomputed every step (taming's sampler). Both draw the same codes from the
        same ``generator``.
        """
        rows = self._rows(condition, count if given is None else given.shape[0])
        n = self.sequence_length
        device = self.transformer.position_embedding.device
        out = torch.empty(rows, n, dtype=torch.long, device=device)
        done = 0
        if given is not None:
            if given.dim() != 2 or given.shape[1] >= n:
                raise ValueError(f"{NAME}: given codes must be b x g with g < {n}, got {tuple(given.shape)}")
            given = given.to(device).long()
            out[:, : given.shape[1]] = given
            done = given.shape[1]
        inputs, keep, guided = self._prompt(condition, given, rows, guidance_scale)
        cache = self.transformer.new_cache(inputs.shape[0], inputs) if use_cache else None
        logits = self.transformer(inputs, keep, cache, last_only=True)[:, 0]
        for position in range(done, n):
            logits = filter_logits(self._guide(logits, guided, rows, guidance_scale), temperature, top_k, top_p)
            code = draw(logits, generator)  # b
            out[:, position] = code
            if position == n - 1:
                break
            new = self.transformer.embed((code.repeat(2) if guided else code)[:, None])  # b' 1 d
            if cache is not None:
                logits = self.transformer(new, keep, cache, last_only=True)[:, 0]
            else:
                inputs = torch.cat([inputs, new], 1)
                logits = self.transformer(inputs, keep, last_only=True)[:, 0]
        return self.grid_codes(out)

    #: Options of :meth:`generate` (defaults: the config's ``sampling`` table).
    SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "guidance_scale")

    def effective_sampling(self, **options) -> dict:
        """The sampling options :meth:`generate` uses: ``options`` over the config's ``sampling`` table."""
        defaults = {name: getattr(self.config.sampling, name) for name in self.SAMPLING_OPTIONS}
        return sampling_settings(NAME, defaults, options)

    @torch.no_grad()
    def generate(self, batch: dict, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """Codes ``b h w``, one row per row of ``batch``, under the condition the model was trained with.

        ``batch`` is a batch of the validation split: its ``codes`` give the completion prompts, its
        ``segmentation`` (or ``condition_codes``) the semantic condition, its ``text_states`` /
        ``text_pad`` the text condition; an unconditional prior only counts its rows.
        """
        settings = self.effective_sampling(**options)
        rows = require(batch, "codes", NAME, "generate() takes a batch of the validation split").shape[0]
        condition = self.config.condition
        if condition == "completion":
            return self.complete(batch["codes"], generator=generator, **settings)
        if condition == "unconditional":
            return self.sample(count=rows, generator=generator, **settings)
        keys = ("segmentation", "condition_codes") if condition == "semantic" else ("text_states", "text_pad")
        return self.sample(condition={k: batch[k] for k in keys if k in batch}, generator=generator, **settings)

    def sample_conditions(self, batch: dict) -> SampleConditions | None:
        """What :meth:`generate` conditions each row of ``batch`` on, for the panels of a sample grid."""
        condition = self.config.condition
        if condition == "completion":
            rows = batch["codes"].shape[0]
            h, w = self.grid
            given = round(self.config.completion_fraction * self.sequence_length)
            positions = math.ceil(given / self.indices_per_position)  # raster positions with a given code
            mask = (torch.arange(h * w, device=batch["codes"].device) < positions).view(1, h, w)
            return SampleConditions(given=mask.expand(rows, h, w))
        if condition == "semantic":
            labels = batch.get("segmentation")
            return SampleConditions(labels=labels) if labels is not None else None
        if condition == "text":
            return SampleConditions(captions=list(batch.get("text", batch.get("caption", []))))
        return None

    @torch.no_grad()
    def complete(self, codes: torch.Tensor, fraction: float | None = None, **sampling) -> torch.Tensor:
        """Keep the first ``fraction`` of each raster (default: completion_fraction) and sample the rest."""
        fraction = self.config.completion_fraction if fraction is None else fraction
        flat = self.flat_codes(codes)
        given = round(fraction * self.sequence_length)
        if not 0 < given < self.sequence_length:
            raise ValueError(f"{NAME}: completion fraction {fraction} gives {given} of {self.sequence_length} codes")
        return self.sample(given=flat[:, :given], **sampling)


def with_condition_sizes(config: CodeGPTConfig, condition_tokenizer) -> CodeGPTConfig:
    """``condition_vocab`` / ``condition_length`` of semantic ``vq`` from the condition tokenizer where unset.

    Given values must agree with it: a mismatch is an error naming both.
    """
    import attrs

    if condition_tokenizer is None:
        if config.condition_vocab is None or config.condition_length is None:
            raise ValueError(
                f"{NAME}: semantic_source = 'vq' needs a [condition_tokenizer] (or condition_vocab and condition_length)"
            )
        return config
    vocab, length = condition_tokenizer.codebook_size, condition_tokenizer.sequence_length
    for name, given, actual in (
        ("condition_vocab", config.condition_vocab, vocab),
        ("condition_length", config.condition_length, length),
    ):
        if given is not None and given != actual:
            raise ValueError(f"{NAME}: {name} {given} differs from the condition tokenizer's {actual}; leave it unset")
    return attrs.evolve(config, condition_vocab=vocab, condition_length=length)


def build_code_gpt(config: CodeGPTConfig, context) -> CodeGPT:
    """Factory of the ``code-gpt`` downstream model (text sizes from the run's text encoder, semantic ``vq``
    sizes from its condition tokenizer)."""
    if config.uses_text():
        config = with_text_sizes(config, context.text_encoder, NAME)
    if config.uses_condition_tokenizer():
        config = with_condition_sizes(config, getattr(context, "condition_tokenizer", None))
    return CodeGPT(config, context.frozen_tokenizer)
