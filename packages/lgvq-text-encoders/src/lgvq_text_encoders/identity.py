"""Encoder identity: the key under which cached text features are valid.

The identity names the encoder, the settings that change its outputs, the context length and a
digest of the weights actually loaded. Hashing the loaded tensors rather than a file path means the
same weights give the same identity on every machine (and in ``.pt`` or ``.safetensors`` form),
while any change of content gives a new one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoder_identity(name: str, settings: dict[str, Any], context_length: int, digest: str) -> str:
    """``name(settings)|L=..|weights=sha256:..``: one line, stable across runs and machines."""
    described = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return f"{name}({described})|L={context_length}|weights=sha256:{digest}"
