"""What every kind's contract check shares: the error it raises and two small checks.

Each kind's check lives beside that kind's contract (:func:`lgvq_core.quantizers.base.check_quantizer`,
:func:`lgvq_core.tokenizer.check_tokenizer`, :func:`lgvq_core.text_encoder.check_text_encoder`,
:func:`lgvq_core.alignment.base.check_alignment_loss`, :func:`lgvq_core.data.base.check_dataset`,
:func:`lgvq_core.tasks.check_task`, :func:`lgvq_core.downstream.check_downstream_model`); the plugin
contract suite (:mod:`lgvq_core.testing.contract`) builds a component and runs its kind's check.
No torch here.
"""

from __future__ import annotations

import math
from typing import Any

from lgvq_core.errors import LgvqError


class ContractError(LgvqError, AssertionError):
    """A component breaks its kind's contract; the message says how and what to do."""


def require_instance(component: Any, base: type) -> None:
    """``component`` is a ``base``."""
    if not isinstance(component, base):
        raise ContractError(
            f"the factory returned {type(component).__module__}.{type(component).__qualname__}, "
            f"not a {base.__module__}.{base.__qualname__}"
        )


def require_finite_scalar(value: Any, what: str) -> None:
    """``value`` is a 0-dimensional tensor with a finite value."""
    if not (hasattr(value, "dim") and hasattr(value, "detach")) or value.dim() != 0:
        raise ContractError(f"{what} must be a scalar tensor, got {value!r}")
    number = float(value.detach())
    if not math.isfinite(number):
        raise ContractError(f"{what} is not finite: {number}")


def require_methods(component: Any, what: str, methods: dict[str, tuple[str, ...]]) -> None:
    """``component`` has each method, callable with these positional parameters (``self`` aside)."""
    import inspect

    for name, parameters in methods.items():
        method = getattr(component, name, None)
        if not callable(method):
            raise ContractError(f"{what} must have {name}({', '.join(parameters)}); {component!r} has none")
        try:
            inspect.signature(method).bind(*parameters)
        except TypeError as exc:
            raise ContractError(
                f"{what}: {name} must accept ({', '.join(parameters)}); {name}{inspect.signature(method)}: {exc}"
            ) from None
        except ValueError:  # a builtin without a signature: nothing to check
            continue
