"""Checkpoints that a crash cannot corrupt and that never run code when loaded.

Layout (``checkpoints/`` of a run directory)::

    step-000120/model.safetensors   tokenizer (``tokenizer.*``), alignment heads (``guidance.*``),
                                    discriminator (``discriminator.*``); never the text encoder
    step-000120/state.pt            optimizers, scalers, step, data position, RNG states, callback
                                    state: plain tensors and containers, loaded with weights_only=True
    last.json, best.json            pointers: {"dir": "step-000120", "step": 120, ...}

A checkpoint directory is written under a temporary name, every file fsynced, then renamed into
place; the pointer file is replaced atomically afterwards. A crash at any moment leaves the
previous pointer valid and its directory intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lgvq_core.atomic import fsync_dir, fsync_file, write_json_atomic
from lgvq_core.errors import CheckpointError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
FORMAT_VERSION = 1


def model_tensors(modules: dict[str, nn.Module | None], exclude: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Flat ``prefix.key`` state dicts of ``modules``, leaving out tensors that belong to ``exclude``.

    ``exclude`` is the frozen text encoder: a head tied to its embedding table must not drag the
    table into the checkpoint.
    """
    excluded = set()
    if exclude is not None:
        excluded = {t.data_ptr() for t in list(exclude.parameters()) + list(exclude.buffers())}
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for prefix, module in modules.items():
        if module is None:
            continue
        for key, tensor in module.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                continue  # a module's extra state (get_extra_state): see extra_states()
            if tensor.data_ptr() in excluded and tensor.numel() > 0:
                continue
            tensor = tensor.detach().cpu().contiguous()
            if tensor.data_ptr() in seen and tensor.numel() > 0:  # safetensors refuses shared storage
                tensor = tensor.clone()
            seen[tensor.data_ptr()] = key
            tensors[f"{prefix}.{key}"] = tensor
    return tensors


def extra_states(modules: dict[str, nn.Module | None]) -> dict[str, Any]:
    """Non-tensor entries of the modules' state dicts (``get_extra_state``, e.g. a word vocabulary).

    They are plain containers of strings and numbers and travel in ``state.pt`` (loaded with
    ``weights_only=True``), since safetensors holds tensors only.
    """
    found: dict[str, Any] = {}
    for prefix, module in modules.items():
        if module is not None:
            for key, value in module.state_dict().items():
                if not isinstance(value, torch.Tensor):
                    found[f"{prefix}.{key}"] = value
    return found


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": _python_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoint_dir: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    pointers: list[str],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint atomically and point ``pointers`` (``"last"``, ``"best"``) at it."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = checkpoint_dir / name
    tmp = checkpoint_dir / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        checkpoint_id = uuid.uuid4().hex
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"checkpoint_id": checkpoint_id, "step": str(step)})
        state = {**state, "checkpoint_id": checkpoint_id, "format_version": FORMAT_VERSION, "step": step}
        torch.save(state, tmp / STATE_FILE)
        for file in (MODEL_FILE, STATE_FILE):
            fsync_file(tmp / file)
        fsync_dir(tmp)
        if final.exists():
            # Same step saved again (e.g. "best" then "last" at one step): replace it, keeping the
            # old copy until the new one is in place.
            stale = checkpoint_dir / f".{name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(final, stale)
            os.replace(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(checkpoint_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for pointer in pointers:
        write_json_atomic(checkpoint_dir / f"{pointer}.json", {"dir": name, "step": step, **(info or {})})
    prune_checkpoints(checkpoint_dir)
    return final


def referenced_dirs(checkpoint_dir: Path) -> set[str]:
    names = set()
    for pointer in checkpoint_dir.glob("*.json"):
        try:
            names.add(json.loads(pointer.read_text())["dir"])
        except (OSError, ValueError, KeyError):
            continue
    return names


def prune_checkpoints(checkpoint_dir: Path) -> None:
    """Remove checkpoint directories no pointer refers to (and stale temporaries)."""
    keep = referenced_dirs(checkpoint_dir)
    for path in checkpoint_dir.iterdir():
        if path.is_dir() and path.name not in keep and (path.name.startswith("step-") or path.name.startswith(".")):
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(run_dir: Path, which: str = "last") -> Path:
    """The checkpoint directory for ``which``: ``last``, ``best``, or a path to a checkpoint dir."""
    candidate = Path(which)
    if which not in {"last", "best"}:
        if (candidate / MODEL_FILE).exists():
            return candidate
        if candidate.name == MODEL_FILE and candidate.exists():
            return candidate.parent
        raise CheckpointError(f"{candidate}: not a checkpoint directory (expected {MODEL_FILE} and {STATE_FILE} in it)")
    pointer = run_dir / "checkpoints" / f"{which}.json"
    if not pointer.exists():
        if which == "best" and (run_dir / "checkpoints" / "last.json").exists():
            return resolve_checkpoint(run_dir, "last")
        raise CheckpointError(
            f"{pointer}: no {which!r} checkpoint in {run_dir} (the run saved none yet; "
            "checkpoints are written every train.checkpoint_every steps, at the end and on SIGINT/SIGTERM)"
        )
    try:
        target = run_dir / "checkpoints" / json.loads(pointer.read_text())["dir"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer ({exc})") from None
    if not (target / MODEL_FILE).exists() or not (target / STATE_FILE).exists():
        raise CheckpointError(f"{target}: checkpoint directory is incomplete")
    return target


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and state of a checkpoint directory. Never unpickles code (``weights_only=True``)."""
    try:
        tensors = load_file(str(path / MODEL_FILE), device=str(map_location))
        state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing {Path(exc.filename).name}") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files of any kind
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    return tensors, state


def split_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def load_module(
    module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path, extra: dict[str, Any] | None = None
) -> None:
    """Load ``prefix.*`` weights (and extra states, see :func:`extra_states`) into ``module`` strictly,
    with an error naming the mismatch."""
    own = {**split_tensors(tensors, prefix), **split_tensors(extra or {}, prefix)}
    try:
        result = module.load_state_dict(own, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{source}: the {prefix} weights do not fit the model built from the run file ({exc}). "
            "Was the [model] section changed since the checkpoint was written?"
        ) from None
    missing = [k for k in result.missing_keys]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the {prefix} weights do not match the model built from the run file "
            f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}). "
            "Was the [model] section changed since the checkpoint was written?"
        )
