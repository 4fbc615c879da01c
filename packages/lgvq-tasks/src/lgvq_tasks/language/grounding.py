"""TransVG-style visual grounding on frozen codes (paper Table 8).

The sequence ``[REG; text tokens; visual tokens]`` runs through a bidirectional transformer encoder;
the [REG] output goes through a 3-layer MLP and a sigmoid to ``cx cy w h`` (normalised). Text tokens are
the frozen text encoder's cached token states (never trained), projected to the fusion width with a
learned position embedding; visual tokens are the frozen code vectors (:mod:`.visual_tokens`) projected
likewise; each of the three parts adds its own learned type embedding. Loss, as TransVG's code: ``l1_weight * L1 + giou_weight * (1 - GIoU)``
with the L1 distance of ``cx cy w h`` summed over the four coordinates and both terms averaged over
boxes (weights 1 and 1).

Batch keys: ``codes`` (LongTensor b h w, or b k h w), ``text_states`` (float b L W_text: the text
encoder's ``token_states``), ``text_pad`` (bool b L, True at real tokens: the encoder's ``pad_mask``)
and, for training, ``boxes`` (float b 4: x0 y0 x1 y1 normalised to [0, 1], as ``Referring.box``).
``GroundingConfig.uses_text()`` is true, so a downstream run adds the text states of its batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from lgvq_core.api import FrozenTokenizer

from .boxes import check_boxes
from .config import GroundingConfig
from .param_groups import linear_weight_decay_groups
from .visual_tokens import VisualTokens


class GroundingModel(nn.Module):
    """``text_width``: width W_text of the cached text states (the frozen text encoder's)."""

    def __init__(self, config: GroundingConfig, tokenizer: FrozenTokenizer, text_width: int) -> None:
        super().__init__()
        self.config = config
        self.text_width = text_width
        self.visual = VisualTokens(config.visual, tokenizer)
        width = config.width
        self.visual_projection = nn.Linear(self.visual.dim, width)
        self.text_projection = nn.Linear(text_width, width)
        self.text_positions = nn.Parameter(torch.randn(config.max_text_tokens, width) * 0.02)
        self.register_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.part_embedding = nn.Parameter(torch.randn(3, width) * 0.02)  # [REG], text, visual
        layer = nn.TransformerEncoderLayer(
            width, config.heads, 4 * width, dropout=config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.box_head = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
        )

    def _text(self, batch: dict, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        for key in ("text_states", "text_pad"):
            if key not in batch:
                raise KeyError(
                    f"the batch has no {key!r} (keys: {sorted(batch)}): grounding reads the frozen text "
                    "encoder's cached token states and pad mask of each referring expression"
                )
        states, pad = batch["text_states"], batch["text_pad"]
        if states.dim() != 3 or states.shape[0] != count or states.shape[2] != self.text_width:
            raise ValueError(
                f"batch['text_states'] has shape {tuple(states.shape)}, expected {count} x L x {self.text_width}"
            )
        if pad.shape != states.shape[:2]:
            raise ValueError(f"batch['text_pad'] has shape {tuple(pad.shape)}, expected {tuple(states.shape[:2])}")
        if states.shape[1] > self.config.max_text_tokens:
            raise ValueError(
                f"batch['text_states'] has {states.shape[1]} tokens, more than max_text_tokens "
                f"{self.config.max_text_tokens}: raise it in the grounding config"
            )
        return states.float(), pad.bool()

    def predict_cxcywh(self, batch: dict) -> torch.Tensor:
        codes = batch["codes"]
        states, pad = self._text(batch, codes.shape[0])
        b, length = pad.shape
        visual = self.visual_projection(self.visual(codes)) + self.part_embedding[2]  # b N width
        text = self.text_projection(states) + self.text_positions[:length] + self.part_embedding[1]  # b L width
        register = (self.register_token + self.part_embedding[0]).expand(b, -1, -1)  # b 1 width
        sequence = torch.cat([register, text, visual], dim=1)
        ignored = torch.cat(
            [pad.new_zeros(b, 1), ~pad, pad.new_zeros(b, visual.shape[1])], dim=1
        )  # True: padding the encoder must not attend to
        out = self.final_norm(self.encoder(sequence, src_key_padding_mask=ignored))
        return self.box_head(out[:, 0]).sigmoid()  # b 4: cx cy w h

    def training_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        if "boxes" not in batch:
            raise KeyError(f"the batch has no 'boxes' (keys: {sorted(batch)}): grounding trains on true boxes")
        truth = check_boxes(batch["boxes"]).to(batch["codes"].device)
        predicted = self.predict_cxcywh(batch)
        l1 = F.l1_loss(predicted, box_convert(truth, "xyxy", "cxcywh"), reduction="none").sum(1).mean()
        giou = generalized_box_iou_loss(box_convert(predicted, "cxcywh", "xyxy"), truth, reduction="mean")
        loss = self.config.l1_weight * l1 + self.config.giou_weight * giou
        return {"loss": loss, "l1": l1.detach(), "giou_loss": giou.detach()}

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """Boxes x0 y0 x1 y1 (b 4, normalised, clamped to the image), in eval mode for the call."""
        was_training = self.training
        self.eval()
        try:
            boxes = box_convert(self.predict_cxcywh(batch), "cxcywh", "xyxy").clamp(0, 1)
        finally:
            self.train(was_training)
        return boxes

    def param_groups(self, weight_decay: float) -> list[dict]:
        return linear_weight_decay_groups(self, weight_decay)


def build_grounding(config: GroundingConfig, context) -> GroundingModel:
    """Factory of the ``grounding`` downstream model (text width from the run's text encoder)."""
    if context.text_encoder is None:
        raise ValueError("grounding reads text-encoder states of the referring expressions: give a [text_encoder]")
    return GroundingModel(config, context.frozen_tokenizer, context.text_encoder.width)
