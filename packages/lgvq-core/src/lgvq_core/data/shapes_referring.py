"""Referring expressions of a ``shapes`` scene: phrases that each name exactly one shape.

An expression uses what sets its shape apart: its colour (unique in a scene), its kind or size and
kind when no other shape shares them, its size when no other shape shares it, or a relation to
another shape ("the circle left of the blue square") when no other shape of its kind stands in
that relation. The box is the shape's tight box, as fractions of the image side.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from lgvq_core.data.annotations import Referring
from lgvq_core.data.shapes_captions import PHRASES, _pick
from lgvq_core.data.shapes_questions import unique_subject
from lgvq_core.data.shapes_scene import Scene


def referring_for(scene: Scene, rng: np.random.Generator) -> list[Referring]:
    """Every expression of the scene, shape by shape in a fixed order; phrasings drawn from ``rng``."""
    shapes = scene.shapes
    sizes = Counter(s.size for s in shapes)
    relations = scene.relations()
    found: list[Referring] = []
    for i, shape in enumerate(shapes):
        texts = [f"the {shape.size} {shape.color} {shape.kind}", f"the {shape.color} {shape.kind}"]
        subject = unique_subject(shape, shapes)
        if subject is not None:
            texts.append(subject)
        if len(shapes) > 1 and sizes[shape.size] == 1:
            texts.append(f"the {shape.size} shape")
        for holder, relation, j in relations:
            if holder != i:
                continue
            same_kind = {m for m, name, k in relations if k == j and name == relation and shapes[m].kind == shape.kind}
            if same_kind == {i}:
                anchor = shapes[j]
                texts.append(f"the {shape.kind} {_pick(rng, PHRASES[relation])} the {anchor.color} {anchor.kind}")
        box = tuple(min(max(v, 0.0), 1.0) for v in shape.box())
        found.extend(Referring(text, box, i) for text in texts)
    return found
