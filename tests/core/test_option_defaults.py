"""A mutable default cannot be written: option() refuses it and shows the factory form."""

from __future__ import annotations

import pytest

from lgvq_core.config.fields import option


@pytest.mark.parametrize("default", [[1, 2, 4], {"a": 1}, {1, 2}])
def test_a_mutable_default_is_refused_with_the_factory_form(default):
    with pytest.raises(TypeError) as info:
        option(default, "Channel multipliers.")
    message = str(info.value)
    assert f"option(doc=..., factory=lambda: {default!r})" in message and "shared by every config object" in message


def test_immutable_defaults_and_factories_are_accepted():
    option((1, 2, 4), "A tuple is immutable.")
    option(doc="A list through a factory.", factory=lambda: [1, 2, 4])
    option(None, "Unset.")
