"""Scenes of the ``shapes`` dataset: sampling a layout, drawing it, and its ground truth.

A scene is sampled in unit coordinates (the image is [0, 1]²), so the same scene can be drawn at
any resolution. Shapes of one image have distinct colours (so "the red circle" names one shape)
and non-overlapping boxes (so every pair is left/right of or above/below each other).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from PIL import Image, ImageDraw

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (50, 170, 65),
    "blue": (40, 85, 225),
    "yellow": (240, 205, 35),
    "purple": (140, 65, 195),
    "orange": (245, 135, 25),
    "pink": (245, 120, 190),
    "cyan": (35, 200, 215),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (242, 242, 242),
    "gray": (128, 128, 128),
    "black": (22, 22, 22),
}
#: Side of a shape's layout square as a share of the image side.
SIZES: dict[str, float] = {"small": 0.22, "large": 0.38}
#: Largest "small" side for which four small shapes (with the size jitter, margin and gap) always fit.
MAX_SMALL_SIDE = 0.4
RELATIONS: tuple[str, ...] = ("left-of", "right-of", "above", "below")
#: The 3x3 grid's cells, row by row: a corner takes two words, the middle row and column one.
CELLS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
INVERSE: dict[str, str] = {"left-of": "right-of", "right-of": "left-of", "above": "below", "below": "above"}

_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_COLOR_NAMES = tuple(COLORS)
_SIZE_NAMES = tuple(SIZES)
_TRIES = 25  # random spots tried per shape before the layout starts over
_MARGIN = 0.03  # free border, as a share of the side
_GAP = 0.05  # least distance between two layout squares along the axis that separates them
_SUPERSAMPLE = 4  # drawn at 4x and box-filtered down: anti-aliased edges
_GRADIENT = 28.0  # grey levels across the image of a "varied" background


@attrs.frozen
class Shape:
    """One shape: what it is and where (unit coordinates; ``half`` is half its layout side)."""

    kind: str
    color: str
    size: str
    cx: float
    cy: float
    half: float

    def outline(self) -> list[tuple[float, float]]:
        """Polygon vertices in unit coordinates (a circle is drawn as an ellipse instead)."""
        cx, cy, h = self.cx, self.cy, self.half
        if self.kind in ("circle", "square"):
            return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
        if self.kind == "triangle":
            return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
        if self.kind == "diamond":
            return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
        if self.kind == "star":
            points = []
            for k in range(10):
                radius = h if k % 2 == 0 else 0.45 * h
                angle = -math.pi / 2 + k * math.pi / 5
                points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
            return points
        raise ValueError(f"unknown shape kind {self.kind!r}")

    def box(self) -> tuple[float, float, float, float]:
        """Tight box ``(x0, y0, x1, y1)`` of the drawn shape, unit coordinates."""
        xs, ys = zip(*self.outline(), strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def area(self) -> float:
        """Area of the drawn shape as a share of the image (the circle's disc, a polygon's outline).

        ``half²`` times the area of the kind at half side 1, so shapes of one kind and size have
        exactly equal areas wherever they stand.
        """
        return self.half**2 * _unit_area(self.kind)

    def cell(self) -> str:
        """The cell of the 3x3 grid that holds the centre: one of :data:`CELLS`."""
        column = "left" if self.cx < 1 / 3 else "right" if self.cx > 2 / 3 else "center"
        row = "top" if self.cy < 1 / 3 else "bottom" if self.cy > 2 / 3 else "middle"
        if row == "middle":
            return column
        return row if column == "center" else f"{row} {column}"


def _unit_area(kind: str) -> float:
    """Area of a ``kind`` of half side 1: π for the circle, the shoelace formula for a polygon."""
    if kind == "circle":
        return math.pi
    points = Shape(kind=kind, color="", size="", cx=0.0, cy=0.0, half=1.0).outline()
    doubled = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True))
    return abs(doubled) / 2.0


@attrs.frozen
class Scene:
    shapes: tuple[Shape, ...]
    background: str
    #: Direction (radians) of the background gradient; ``None`` for a plain background.
    gradient: float | None

    def relations(self) -> list[tuple[int, str, int]]:
        """Every ``(i, relation, j)`` that holds between the tight boxes of shapes i and j.

        ``left-of`` means box i ends before box j starts horizontally; ``above`` likewise vertically.
        """
        boxes = [shape.box() for shape in self.shapes]
        found = []
        for i, a in enumerate(boxes):
            for j, b in enumerate(boxes):
                if i == j:
                    continue
                if a[2] <= b[0]:
                    found.append((i, "left-of", j))
                if a[0] >= b[2]:
                    found.append((i, "right-of", j))
                if a[3] <= b[1]:
                    found.append((i, "above", j))
                if a[1] >= b[3]:
                    found.append((i, "below", j))
        return found

    def ground_truth(self, image_size: int) -> dict[str, Any]:
        """Boxes (pixel ``x0 y0 x1 y1``), attributes and relations, for downstream tasks."""
        return {
            "image_size": image_size,
            "background": self.background,
            "boxes": [[round(v * image_size, 3) for v in shape.box()] for shape in self.shapes],
            "shapes": [shape.kind for shape in self.shapes],
            "colors": [shape.color for shape in self.shapes],
            "sizes": [shape.size for shape in self.shapes],
            "relations": self.relations(),
        }


def _separated(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1]


def sample_scene(
    rng: np.random.Generator,
    min_shapes: int,
    max_shapes: int,
    varied_background: bool,
    sizes: dict[str, float] | None = None,
) -> Scene:
    """A random scene with exactly the sampled number of shapes.

    Shapes are placed one by one at random free spots; when one finds none, the whole layout is
    drawn again, and every few failed layouts one large shape becomes small, so a crowded scene
    always fits in the end (four small shapes always do, for a small side up to
    :data:`MAX_SMALL_SIDE`). ``sizes`` gives the layout side of "small" and "large" shapes
    (default :data:`SIZES`).
    """
    sides = SIZES if sizes is None else sizes
    count = int(rng.integers(min_shapes, max_shapes + 1))
    background = _BACKGROUND_NAMES[int(rng.integers(len(_BACKGROUND_NAMES)))]
    gradient = float(rng.uniform(0.0, 2.0 * math.pi)) if varied_background else None
    colors = [_COLOR_NAMES[int(k)] for k in rng.permutation(len(_COLOR_NAMES))[:count]]
    kinds = [KINDS[int(k)] for k in rng.integers(len(KINDS), size=count)]
    names = [_SIZE_NAMES[int(k)] for k in rng.integers(len(_SIZE_NAMES), size=count)]
    for layout in itertools.count():
        if layout and layout % 4 == 0 and "large" in names:
            names[names.index("large")] = "small"
        shapes = _place(rng, kinds, colors, names, sides)
        if shapes is not None:
            return Scene(shapes=tuple(shapes), background=background, gradient=gradient)
    raise AssertionError("unreachable")


def _place(
    rng: np.random.Generator, kinds: list[str], colors: list[str], sizes: list[str], sides: dict[str, float]
) -> list[Shape] | None:
    """One random layout, or ``None`` when a shape found no free spot in a few tries."""
    placed: list[Shape] = []
    squares: list[tuple[float, float, float, float]] = []
    for kind, color, size in zip(kinds, colors, sizes, strict=True):
        for jitter, u, v in rng.random((_TRIES, 3)).tolist():  # one draw per shape: fast and reproducible
            half = sides[size] * (0.92 + 0.16 * jitter) / 2.0
            cx = _MARGIN + half + u * (1.0 - 2.0 * (_MARGIN + half))
            cy = _MARGIN + half + v * (1.0 - 2.0 * (_MARGIN + half))
            square = (cx - half, cy - half, cx + half, cy + half)
            if all(_separated(square, other) for other in squares):
                placed.append(Shape(kind=kind, color=color, size=size, cx=cx, cy=cy, half=half))
                squares.append(square)
                break
        else:
            return None
    return placed


def _background(scene: Scene, image_size: int) -> Image.Image:
    """The background at ``image_size`` x ``image_size`` pixels."""
    color = BACKGROUNDS[scene.background]
    if scene.gradient is None:
        return Image.new("RGB", (image_size, image_size), color)
    ramp = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
    shade = _GRADIENT * (math.cos(scene.gradient) * ramp[None, :] + math.sin(scene.gradient) * ramp[:, None])  # h w
    pixels = np.clip(np.asarray(color, dtype=np.float32)[None, None, :] + shade[:, :, None], 0, 255)  # h w 3
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _draw_shapes(canvas: Image.Image, scene: Scene, fill_of: Callable[[Shape], Any]) -> None:
    """Draw every shape of the scene on the square ``canvas``, each filled with ``fill_of(shape)``."""
    side = canvas.size[0]
    draw = ImageDraw.Draw(canvas)
    for shape in scene.shapes:
        fill = fill_of(shape)
        if shape.kind == "circle":
            x0, y0, x1, y1 = shape.box()
            draw.ellipse([x0 * side, y0 * side, x1 * side, y1 * side], fill=fill)
        else:
            draw.polygon([(x * side, y * side) for x, y in shape.outline()], fill=fill)


def render_scene(scene: Scene, image_size: int) -> Image.Image:
    """Draw the scene at ``image_size`` pixels: drawn 4x larger, then box-filtered down."""
    side = image_size * _SUPERSAMPLE
    # the background varies slowly: made at the final size, it survives the box filter unchanged
    canvas = _background(scene, image_size).resize((side, side), Image.NEAREST)
    _draw_shapes(canvas, scene, lambda shape: COLORS[shape.color])
    return canvas.reduce(_SUPERSAMPLE)


#: Segmentation classes of ``shapes``: the background, then one class per shape kind.
SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *KINDS)


def render_labels(scene: Scene, image_size: int) -> Image.Image:
    """The scene's label map (``L`` image of :data:`SEGMENTATION_CLASSES` ids) at ``image_size``.

    Drawn on the same 4x grid as :func:`render_scene`; each pixel takes the class that covers most
    of its 16 sub-pixels (the background on a tie), i.e. the class whose colour dominates the
    anti-aliased image pixel.
    """
    side = image_size * _SUPERSAMPLE
    canvas = Image.new("L", (side, side), 0)
    _draw_shapes(canvas, scene, lambda shape: SEGMENTATION_CLASSES.index(shape.kind))
    fine = np.asarray(canvas).reshape(image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE)
    votes = np.stack([(fine == label).sum(axis=(1, 3)) for label in range(len(SEGMENTATION_CLASSES))])  # c h w
    # argmax keeps the first of equal counts: the background wins a tie, as the image's colour is then halfway
    return Image.fromarray(votes.argmax(axis=0).astype(np.uint8), "L")
