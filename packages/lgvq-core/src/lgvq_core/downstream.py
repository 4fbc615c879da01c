"""What a model trained on a frozen tokenizer's codes sees of that tokenizer, and what it must offer.

A downstream ("stage-2") model never runs the image encoder: the runner encodes each split once,
caches the code indices on disk, and hands the model batches of cached codes plus whatever
annotations its task needs. The model is built from its config and a :class:`FrozenTokenizer`.

**Contract of a downstream model** (an ``nn.Module``):

- ``__init__(config, tokenizer: FrozenTokenizer)``.
- ``training_loss(batch: dict) -> dict[str, Tensor]``: scalar tensors; ``"loss"`` is what is
  back-propagated, every other entry is logged. ``batch["codes"]`` is a ``LongTensor`` ``b h w``
  (``b k h w`` when a position carries ``k`` indices); the other keys are the task's own and are
  documented on the model. Random draws (dropout, condition dropout, diffusion time steps, masks)
  use torch's global generator, which every checkpoint saves and restores, or a generator passed
  in the batch as ``batch["generator"]``.
- ``param_groups(weight_decay: float) -> list[dict]``: optimizer parameter groups (e.g. decay on
  Linear weights only).

A generative model also offers (``lgvq sample`` and the ``generation-fid`` task use them):

- ``SAMPLING_OPTIONS``: the names of its sampling options (``temperature``, ``top_k``, ``steps`` ...);
- ``effective_sampling(**options) -> dict``: the options it would use (given ones over its
  defaults); an unknown name is a ``ValueError`` naming the known ones;
- ``generate(batch, generator, **options) -> LongTensor``: codes ``b h w``, one row per row of a
  validation batch, which carries the condition (completion prompts, label maps, captions' text
  states). Every draw comes from ``generator``;
- optionally ``sample_conditions(batch) -> SampleConditions``: what each sample was conditioned on,
  drawn beside it in sample grids (the given part of a completion, the label map, the caption).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lgvq_core.contracts import ContractError, require_finite_scalar


@dataclass(frozen=True)
class FrozenTokenizer:
    """The parts of a trained tokenizer a downstream model may depend on.

    ``codebook`` is the frozen ``K x D`` float tensor of code vectors (detached, never trained by a
    downstream model): visual tokens for language tasks are ``codebook[codes]``, since the codebook
    is what differs between a baseline and a language-guided tokenizer.
    """

    codebook_size: int
    grid: tuple[int, int]
    code_dim: int
    codebook: Any  # torch.Tensor, K x D
    indices_per_position: int = 1

    @property
    def sequence_length(self) -> int:
        """Number of code indices in one image's raster sequence."""
        return self.grid[0] * self.grid[1] * self.indices_per_position


@dataclass(frozen=True)
class SampleConditions:
    """What the samples of one validation batch were conditioned on, for the panels of a sample grid.

    ``given``: ``b h w`` booleans over the code grid, True where the codes were given (a completion
    prompt); the grid shows the original with the rest greyed out. ``labels``: ``b H W`` class ids of
    a label map the samples follow (drawn in a fixed palette). ``captions``: the text of each sample.
    Every field is optional; the original (the validation item's own codes, decoded) is always shown
    when any is set.
    """

    given: Any = None  # torch.BoolTensor b h w
    labels: Any = None  # torch.LongTensor b H W
    captions: list[str] | None = None


def check_downstream_model(model: Any, train_data: Any, text_encoder: Any) -> None:
    """The downstream-model contract: one loss on a batch of ``train_data`` (with text states when a
    ``text_encoder`` is given) is a dict with a finite ``loss`` whose gradient reaches the trainable
    parameters, and ``param_groups`` holds each of them once. Raises :class:`~lgvq_core.contracts.ContractError`."""
    data = train_data
    batch: dict[str, Any] = data.collate([data[(i, i)] for i in range(2)])
    if text_encoder is not None:
        features = text_encoder.encode(list(batch.get("text", batch["caption"])))
        batch.update(text_states=features.token_states, text_pad=features.pad_mask)
    terms = model.training_loss(batch)
    if not isinstance(terms, dict) or "loss" not in terms:
        raise ContractError(f"training_loss must return a dict with 'loss'; got {type(terms).__name__}")
    for name, value in terms.items():
        require_finite_scalar(value, f"training_loss()[{name!r}]")
    terms["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not any(p.grad is not None for p in trainable):
        raise ContractError("training_loss()['loss'] gives no gradient to any parameter")
    grouped = [p for group in model.param_groups(0.01) for p in group["params"]]
    if len(grouped) != len({id(p) for p in grouped}) or {id(p) for p in grouped} != {id(p) for p in trainable}:
        raise ContractError("param_groups() must hold every trainable parameter exactly once")
