"""Captions of a ``shapes`` scene: several phrasings, each true of the scene.

Every relation word comes from :meth:`Scene.relations`, so "left of" always matches the boxes.
Shapes of one scene have distinct colours, so "the red circle" always names one shape.
"""

from __future__ import annotations

import numpy as np

from lgvq_core.data.shapes_scene import INVERSE, Scene, Shape

NUMBERS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
#: Phrasings of each relation ("i left-of j": "i <phrase> j").
PHRASES: dict[str, tuple[str, ...]] = {
    "left-of": ("left of", "to the left of"),
    "right-of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below", "under"),
}


def an(phrase: str) -> str:
    """The phrase with its indefinite article ("an orange circle")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def full(shape: Shape) -> str:
    return f"{shape.size} {shape.color} {shape.kind}"


def short(shape: Shape) -> str:
    return f"{shape.color} {shape.kind}"


def listing(parts: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def count_phrase(shapes: tuple[Shape, ...]) -> str:
    """``"two circles and a star"``: kinds in order of first appearance, with their counts."""
    counts: dict[str, int] = {}
    for shape in shapes:
        counts[shape.kind] = counts.get(shape.kind, 0) + 1
    return listing([f"a {kind}" if n == 1 else f"{NUMBERS[n]} {kind}s" for kind, n in counts.items()])


def region(shape: Shape) -> str:
    """Where a shape's centre falls in a 3x3 grid: "the top left", "the center", "the bottom"."""
    return f"the {shape.cell()}"


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def candidates(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Every phrasing this scene gets, in a fixed order (the random parts come from ``rng``)."""
    shapes = scene.shapes
    background = f"on a {scene.background} background"
    order = sorted(range(len(shapes)), key=lambda i: shapes[i].cx)  # left to right
    relations: dict[tuple[int, int], list[str]] = {}
    for i, relation, j in scene.relations():
        relations.setdefault((i, j), []).append(relation)

    def phrase(relation: str) -> str:
        return _pick(rng, PHRASES[relation])

    if len(shapes) == 1:
        (only,) = shapes
        return [
            an(full(only)),
            f"{an(full(only))} {background}",
            f"one {short(only)}",
            f"{an(short(only))} in {region(only)}",
            f"a single {only.kind}, {only.size} and {only.color}",
            f"there is {an(full(only))} in {region(only)}",
            f"a {only.size} {only.kind} colored {only.color} {background}",
        ]
    if len(shapes) == 2:
        i, j = order
        left, right = shapes[i], shapes[j]
        relation = _pick(rng, relations[(i, j)])
        found = [
            f"{an(full(left))} {phrase(relation)} {an(full(right))}",
            f"{an(full(right))} {phrase(INVERSE[relation])} {an(full(left))}",
            f"the {short(left)} is {phrase(relation)} the {short(right)}",
            f"two shapes: {an(short(left))} and {an(short(right))}",
            f"{an(full(left))} and {an(full(right))} {background}",
            f"{count_phrase((left, right))} {background}",
        ]
        for other in relations[(i, j)]:
            if other != relation:
                found.append(f"the {short(right)} is {phrase(INVERSE[other])} the {short(left)}")
        return found
    number = NUMBERS[len(shapes)]
    ordered = [shapes[k] for k in order]
    i, j = (int(k) for k in rng.choice(len(shapes), size=2, replace=False))
    k, m = (int(k) for k in rng.choice(len(shapes), size=2, replace=False))
    rest = [shapes[n] for n in order if n not in (i, j)]
    found = [
        f"{number} shapes: {listing([an(short(s)) for s in ordered])}",
        f"{count_phrase(tuple(ordered))} {background}",
        f"{an(full(shapes[i]))} {phrase(_pick(rng, relations[(i, j)]))} {an(full(shapes[j]))}, "
        f"and {listing([an(full(s)) for s in rest])}",
        f"the {short(shapes[k])} is {phrase(_pick(rng, relations[(k, m)]))} the {short(shapes[m])}",
        f"{number} shapes {background}: {count_phrase(tuple(ordered))}",
        f"{an(short(shapes[m]))} {phrase(_pick(rng, relations[(m, k)]))} {an(short(shapes[k]))}",
    ]
    if all("left-of" in relations[(p, q)] for p, q in zip(order, order[1:], strict=False)):
        found.append("from left to right: " + listing([an(short(s)) for s in ordered]))
    return found


def captions_for(scene: Scene, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct captions of the scene (all of them when it has fewer phrasings)."""
    unique = list(dict.fromkeys(candidates(scene, rng)))
    return [unique[int(k)] for k in rng.permutation(len(unique))[:count]]
