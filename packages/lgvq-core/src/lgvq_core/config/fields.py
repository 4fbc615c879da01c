"""Helpers for writing config classes: documented fields and small validators.

Config classes are attrs classes that import no torch. Document every field with ``doc``; the
text is what ``lgvq schema`` prints::

    @attrs.define
    class VQConfig:
        codebook_size: int = option(1024, "Number of codes K.", validator=positive)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs

NOTHING = attrs.NOTHING


def option(
    default: Any = NOTHING,
    doc: str = "",
    validator: Callable[..., Any] | Sequence[Callable[..., Any]] | None = None,
    factory: Callable[[], Any] | None = None,
    component: str | None = None,
) -> Any:
    """An attrs field with documentation.

    :param default: the default value (omit for a required key).
    :param doc: one or two sentences for ``lgvq schema``; say what it does and why one would change it.
    :param validator: attrs validator(s); their messages are shown by ``lgvq check``.
    :param factory: a default factory for mutable defaults.
    :param component: the component kind when this field holds a run-file component table
        (dispatched by its ``type`` key to the plugin's config class).
    """
    if isinstance(default, (list, dict, set, bytearray)):
        kind = type(default).__name__
        raise TypeError(
            f"option({default!r}, ...): a {kind} default would be shared by every config object; write "
            f"option(doc=..., factory=lambda: {default!r}) instead (or use a tuple, which is immutable)"
        )
    metadata: dict[str, Any] = {"doc": doc}
    if component is not None:
        metadata["component"] = component
    if factory is not None:
        return attrs.field(factory=factory, validator=validator, metadata=metadata)
    return attrs.field(default=default, validator=validator, metadata=metadata)


def _bound(name: str, test: Callable[[Any], bool], what: str) -> Callable[..., None]:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not test(value):
            raise ValueError(f"must be {what}, got {value!r}")

    check.__name__ = name
    return check


positive = _bound("positive", lambda v: v > 0, "> 0")
non_negative = _bound("non_negative", lambda v: v >= 0, ">= 0")
finite = _bound("finite", lambda v: math.isfinite(v), "a finite number")
#: Largest image side any data set accepts: a 4096 x 4096 batch of 8 already needs gigabytes per layer.
MAX_IMAGE_SIDE = 4096
image_side = _bound(
    "image_side",
    lambda v: 1 <= v <= MAX_IMAGE_SIDE,
    f"in [1, {MAX_IMAGE_SIDE}] (larger images do not fit in memory; the paper uses 256)",
)
probability = _bound("probability", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def in_range(low: float, high: float) -> Callable[..., None]:
    """Validator: ``low <= value <= high``."""
    return _bound("in_range", lambda v: low <= v <= high, f"in [{low}, {high}]")


def field_doc(attribute: attrs.Attribute) -> str:
    return str(attribute.metadata.get("doc", ""))
