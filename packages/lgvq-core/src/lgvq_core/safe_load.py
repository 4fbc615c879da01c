"""Error text of a refused ``torch.load(weights_only=True)``, without PyTorch's advice to unpickle.

PyTorch's refusal suggests "re-running torch.load with weights_only=False will likely succeed":
for a file that is refused because it holds code, that advice would run the code. Every place
lgvq loads a pickle-based file reports the error through :func:`describe_load_error`.
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _is_advice(sentence: str) -> bool:
    lowered = sentence.lower()
    return any(
        phrase in lowered
        for phrase in ("weights_only", "weights only", "allowlist", "trusted source", "documentation of torch.load")
    )


def describe_load_error(exc: BaseException) -> str:
    """``Type: message`` of a load failure with every suggestion to pass ``weights_only=False`` removed."""
    text = str(exc)
    unsafe = "unsupported global" in text.lower()
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip() and not _is_advice(s)]
    detail = " ".join(sentences).replace("WeightsUnpickler error: ", "")[:400]
    if unsafe:
        return (
            f"{type(exc).__name__}: the file holds objects other than tensors and plain containers, which "
            f"lgvq never unpickles ({detail}); do not load it"
        )
    return f"{type(exc).__name__}: {detail or 'not a readable tensor file'}"
