"""The pictures tasks write, drawn with PIL only: image tiles, heat maps, a usage histogram, data URIs."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (120, 120, 120)


def font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def to_pil(image: torch.Tensor) -> Image.Image:
    """3×H×W in [-1, 1] -> RGB image."""
    array = image.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def tile(images: torch.Tensor, columns: int, scale: int = 1) -> Image.Image:
    """N×3×h×w in [-1, 1] -> one picture of ``columns`` × ceil(N / columns) cells, no gaps (cell h·scale × w·scale)."""
    count, _, height, width = images.shape
    rows = max(1, math.ceil(count / columns))
    cell_h, cell_w = height * scale, width * scale
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    for k in range(count):
        patch = to_pil(images[k])
        if scale != 1:
            patch = patch.resize((cell_w, cell_h), Image.Resampling.NEAREST)
        canvas.paste(patch, ((k % columns) * cell_w, (k // columns) * cell_h))
    return canvas


def save_png(image: Image.Image, path: Path) -> Path:
    """Write ``image`` as PNG through a temporary file (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    temporary.replace(path)
    return path


def png_data_uri(image: Image.Image) -> str:
    """``data:image/png;base64,...``: a picture an HTML file carries inside itself."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text_size(draw: ImageDraw.ImageDraw, text: str, face) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    return int(right - left), int(bottom - top)


def usage_histogram(counts: torch.Tensor, title: str, height: int = 160) -> Image.Image:
    """Bars of code counts by code index (one column per code, at least 1 px wide), with axis notes."""
    counts = counts.detach().double().cpu()
    codes = counts.numel()
    bar = max(1, 1024 // max(codes, 1))
    margin_left, margin_top, margin_bottom = 48, 24, 28
    width = margin_left + codes * bar + 12
    canvas = Image.new("RGB", (max(width, 260), margin_top + height + margin_bottom), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    face = font(11)
    peak = float(counts.max()) if codes else 0.0
    base = margin_top + height
    for k in range(codes):
        value = float(counts[k])
        if value <= 0:
            continue
        top = base - max(1, round(height * value / peak))
        draw.rectangle([margin_left + k * bar, top, margin_left + (k + 1) * bar - 1, base - 1], fill=(52, 101, 164))
    draw.line([margin_left - 1, margin_top, margin_left - 1, base], fill=INK)
    draw.line([margin_left - 1, base, margin_left + codes * bar, base], fill=INK)
    draw.text((4, 4), title, fill=INK, font=face)
    draw.text((4, margin_top), f"{peak:.0f}", fill=MUTED, font=face)
    draw.text((4, base - 12), "0", fill=MUTED, font=face)
    draw.text((margin_left, base + 6), "code 0", fill=MUTED, font=face)
    last = f"code {codes - 1}"
    draw.text((margin_left + codes * bar - _text_size(draw, last, face)[0], base + 6), last, fill=MUTED, font=face)
    return canvas


def _diverging(value: float) -> tuple[int, int, int]:
    """-1 blue, 0 white, +1 red."""
    v = max(-1.0, min(1.0, value))
    if v >= 0:
        return (255, round(255 * (1 - v)), round(255 * (1 - v)))
    return (round(255 * (1 + v)), round(255 * (1 + v)), 255)


def heatmap(matrix: torch.Tensor, labels: Sequence[str], title: str, cell: int = 30) -> Image.Image:
    """An n×n matrix of cosines in [-1, 1] as coloured cells with their values, rows and columns labelled."""
    matrix = matrix.detach().float().cpu()
    count = matrix.shape[0]
    face, small = font(11), font(9)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([_text_size(probe, text, face)[0] for text in labels] + [10]) + 6
    title_h = 18
    width = label_w + count * cell + 4
    height = title_h + label_w + count * cell + 4
    canvas = Image.new("RGB", (max(width, _text_size(probe, title, face)[0] + 8), height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill=INK, font=face)
    top = title_h + label_w
    for j, text in enumerate(labels):  # column labels, written upwards
        w, h = _text_size(probe, text, face)
        stamp = Image.new("RGB", (w + 2, h + 4), BACKGROUND)
        ImageDraw.Draw(stamp).text((0, 0), text, fill=INK, font=face)
        stamp = stamp.rotate(90, expand=True)
        canvas.paste(stamp, (label_w + j * cell + (cell - stamp.width) // 2, top - stamp.height - 3))
    for i, text in enumerate(labels):
        w, h = _text_size(draw, text, face)
        draw.text((label_w - w - 4, top + i * cell + (cell - h) // 2), text, fill=INK, font=face)
        for j in range(count):
            value = float(matrix[i, j])
            x0, y0 = label_w + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_diverging(value), outline=BACKGROUND)
            number = f"{value:.2f}"
            nw, nh = _text_size(draw, number, small)
            draw.text((x0 + (cell - nw) // 2, y0 + (cell - nh) // 2), number, fill=INK, font=small)
    return canvas


def side_by_side(pictures: Sequence[Image.Image], gap: int = 16) -> Image.Image:
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), BACKGROUND)
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    return canvas


def stacked(pictures: Sequence[Image.Image], gap: int = 16) -> Image.Image:
    height = sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (max(p.width for p in pictures), height), BACKGROUND)
    y = 0
    for picture in pictures:
        canvas.paste(picture, (0, y))
        y += picture.height + gap
    return canvas
