"""Questions about a ``shapes`` scene, of COCO-QA's four types, each with a single-word answer.

Only questions with exactly one right answer are asked: a question names its object by what is
unique in the scene (its colour always is; its kind or size-and-kind when no other shape shares
them; a relation to another shape when exactly one shape stands in it), and a location is asked
only when the object's centre lies in a cell of the 3x3 grid that one word names. Every answer
word (kinds, colours, counts, locations) is a WordNet noun, so WUPS can score it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from lgvq_core.data.annotations import Question
from lgvq_core.data.shapes_captions import NUMBERS, PHRASES, _pick
from lgvq_core.data.shapes_scene import RELATIONS, Scene, Shape

OBJECT_TEMPLATES: tuple[str, ...] = ("what shape is the {color} object?", "what is the {color} shape?")
COLOR_TEMPLATES: tuple[str, ...] = ("what color is {subject}?", "what is the color of {subject}?")
LOCATION_TEMPLATES: tuple[str, ...] = ("where is {subject}?", "where in the image is {subject}?")
NUMBER_TEMPLATES: tuple[str, ...] = ("how many {things} are there?", "how many {things} are in the image?")


def location_word(shape: Shape) -> str | None:
    """ "left", "right", "top", "bottom" or "center" by the 3x3 cell of the centre; ``None`` in a corner."""
    cell = shape.cell()
    return None if " " in cell else cell


def plural(kind: str) -> str:
    return kind + "s"


def unique_subject(shape: Shape, shapes: tuple[Shape, ...]) -> str | None:
    """A noun phrase without colour that names only ``shape``: "the circle", "the small circle"."""
    kinds = Counter(s.kind for s in shapes)
    if kinds[shape.kind] == 1:
        return f"the {shape.kind}"
    if Counter((s.size, s.kind) for s in shapes)[(shape.size, shape.kind)] == 1:
        return f"the {shape.size} {shape.kind}"
    return None


def questions_for(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Every question this scene gets, in a fixed order; the phrasings are drawn from ``rng``."""
    shapes = scene.shapes
    found: list[Question] = []
    sizes = Counter(s.size for s in shapes)
    for shape in shapes:
        found.append(Question(_pick(rng, OBJECT_TEMPLATES).format(color=shape.color), shape.kind, "object"))
        subject = unique_subject(shape, shapes)
        if subject is not None:
            found.append(Question(_pick(rng, COLOR_TEMPLATES).format(subject=subject), shape.color, "color"))
        if len(shapes) > 1 and sizes[shape.size] == 1:
            subject = f"the {shape.size} shape"
            found.append(Question(_pick(rng, COLOR_TEMPLATES).format(subject=subject), shape.color, "color"))
        word = location_word(shape)
        if word is not None:
            subject = f"the {shape.color} {shape.kind}"
            found.append(Question(_pick(rng, LOCATION_TEMPLATES).format(subject=subject), word, "location"))
    relations = scene.relations()
    for j, anchor in enumerate(shapes):
        for relation in RELATIONS:
            holders = [i for i, name, k in relations if k == j and name == relation]
            if len(holders) == 1:
                text = f"what shape is {_pick(rng, PHRASES[relation])} the {anchor.color} {anchor.kind}?"
                found.append(Question(text, shapes[holders[0]].kind, "object"))
    counts = Counter(s.kind for s in shapes)
    for kind, count in counts.items():
        found.append(Question(_pick(rng, NUMBER_TEMPLATES).format(things=plural(kind)), NUMBERS[count], "number"))
    found.append(Question(_pick(rng, NUMBER_TEMPLATES).format(things="shapes"), NUMBERS[len(shapes)], "number"))
    found.append(Question(_pick(rng, COLOR_TEMPLATES).format(subject="the background"), scene.background, "color"))
    return found
