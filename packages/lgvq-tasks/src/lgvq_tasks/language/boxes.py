"""Boxes of referring expressions: validation, IoU, Acc@0.5 and the predicted-vs-true picture.

Boxes are ``x0 y0 x1 y1`` normalised by the image width and height (so in [0, 1]); the grounding
model predicts ``cx cy w h`` through a sigmoid and converts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from ..pictures import BACKGROUND, INK, font, stacked, to_pil

TRUE_COLOUR = (30, 160, 60)
PREDICTED_COLOUR = (220, 40, 40)


def check_boxes(boxes: torch.Tensor, key: str = "boxes") -> torch.Tensor:
    """``boxes`` as float b x 4, or an error naming ``key`` and what is wrong."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"batch[{key!r}] must be a b x 4 tensor of x0 y0 x1 y1 boxes, got {shape}")
    boxes = boxes.float()
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"batch[{key!r}] holds non-finite coordinates")
    if bool((boxes < 0).any() or (boxes > 1).any()):
        raise ValueError(f"batch[{key!r}] must be normalised to [0, 1] by image width and height")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"batch[{key!r}][{row}] = {boxes[row].tolist()} has x1 < x0 or y1 < y0 (want x0 y0 x1 y1)")
    return boxes


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box ``a[i]`` with box ``b[i]`` (x0 y0 x1 y1, clamped to the image), b."""
    a, b = a.float().clamp(0, 1), b.float().clamp(0, 1)
    a = torch.cat([a[:, :2], torch.maximum(a[:, 2:], a[:, :2])], 1)
    b = torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2])], 1)
    top_left, bottom_right = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))


def grounding_scores(predicted: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Acc@threshold (fraction with IoU >= threshold) and mean IoU, over b box pairs."""
    if predicted.shape != truth.shape or predicted.dim() != 2 or predicted.shape[1] != 4 or predicted.shape[0] == 0:
        raise ValueError(f"need matching non-empty b x 4 boxes, got {tuple(predicted.shape)} and {tuple(truth.shape)}")
    iou = paired_iou(predicted, truth)
    return {f"acc@{threshold:g}": float((iou >= threshold).float().mean()), "mean_iou": float(iou.mean())}


def grounding_picture(
    images: torch.Tensor | None,
    predicted: torch.Tensor,
    truth: torch.Tensor,
    expressions: Sequence[str],
    size: int = 192,
) -> Image.Image:
    """One row per sample: the image (grey when none) with the true box (green) and the predicted box
    (red), the referring expression and the IoU beneath."""
    iou = paired_iou(predicted, truth)
    face = font(11)
    rows = []
    for i, expression in enumerate(expressions):
        if images is not None:
            picture = to_pil(images[i]).resize((size, size), Image.Resampling.BILINEAR)
        else:
            picture = Image.new("RGB", (size, size), (200, 200, 200))
        cell = Image.new("RGB", (size, size + 30), BACKGROUND)
        cell.paste(picture, (0, 0))
        draw = ImageDraw.Draw(cell)
        for box, colour in ((truth[i], TRUE_COLOUR), (predicted[i], PREDICTED_COLOUR)):
            x0, y0, x1, y1 = (float(v) * (size - 1) for v in box.clamp(0, 1))
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=2)
        draw.text((2, size + 2), expression[:40], fill=INK, font=face)
        draw.text((2, size + 16), f"IoU {float(iou[i]):.2f} (green: true, red: predicted)", fill=INK, font=face)
        rows.append(cell)
    return stacked(rows, gap=6) if rows else Image.new("RGB", (size, size), BACKGROUND)
