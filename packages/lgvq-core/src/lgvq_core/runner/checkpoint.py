"""Checkpoints that a crash cannot corrupt, that are verified when loaded and never run code: writing
one, finding the one to load, loading it.

Why it survives a crash at any moment: every checkpoint directory has a name never used before,
is written under a temporary name (every file fsynced, the manifest last) and renamed into place
once; nothing renames or deletes a directory a pointer names (:mod:`lgvq_core.runner.pointers`).
So between any two filesystem operations the old pointers still name complete directories.

Why it is verified: the bytes hashed against the manifest (:mod:`lgvq_core.checkpoint_files`, which
also documents the layout) are the bytes loaded. A missing, unreadable or corrupt ``last`` falls
back to the newest checkpoint that verifies (``previous``, ``best`` or any other complete
directory), saying so.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from lgvq_core import checkpoint_files as files
from lgvq_core.atomic import fsync_dir, is_disk_full, write_json_atomic
from lgvq_core.errors import CheckpointError, DiskFullError
from lgvq_core.runner import pointers as protocol
from lgvq_core.safe_load import describe_load_error


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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync ``data``; the caller owns cleanup of the (temporary) folder."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def save_checkpoint(
    checkpoint_dir: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    pointers: list[str],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint and point ``pointers`` (``"last"``, ``"best"``) at it.

    Both files are serialised in memory first, so that a full disk shows up as one ``OSError``
    on a plain write (raised as :class:`DiskFullError` naming the file and the last complete
    checkpoint) and never as a half-written file anything reads.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    protocol.recover_checkpoints(checkpoint_dir)
    checkpoint_id = uuid.uuid4().hex
    name = f"step-{step:07d}-{checkpoint_id[:8]}"
    final = checkpoint_dir / name
    tmp = checkpoint_dir / f".{name}.tmp"
    state = {**state, "checkpoint_id": checkpoint_id, "format_version": files.FORMAT_VERSION, "step": step}
    model_bytes = save_safetensors(tensors, metadata={"checkpoint_id": checkpoint_id, "step": str(step)})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    state_bytes = buffer.getvalue()
    manifest = {
        "format_version": files.FORMAT_VERSION,
        "step": step,
        "checkpoint_id": checkpoint_id,
        "files": {
            files.MODEL_FILE: {"sha256": files.sha256(model_bytes), "bytes": len(model_bytes)},
            files.STATE_FILE: {"sha256": files.sha256(state_bytes), "bytes": len(state_bytes)},
        },
    }
    writing = tmp
    try:
        tmp.mkdir()
        for file, data in (
            (files.MODEL_FILE, model_bytes),
            (files.STATE_FILE, state_bytes),
            (files.MANIFEST_FILE, json.dumps(manifest, indent=2).encode()),
        ):
            writing = tmp / file
            _write_file(writing, data)
        writing = tmp
        fsync_dir(tmp)
        os.replace(tmp, final)  # a new, unique name: nothing is ever replaced
        fsync_dir(checkpoint_dir)
        record = {"dir": name, "step": step, "files": manifest["files"], **(info or {})}
        for pointer in pointers:
            writing = checkpoint_dir / f"{pointer}.json"
            if pointer == "last":
                protocol.keep_previous(checkpoint_dir, name)
                writing = checkpoint_dir / f"{pointer}.json"
            write_json_atomic(writing, record)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and final.exists() and name not in files.referenced_dirs(checkpoint_dir):
            shutil.rmtree(final, ignore_errors=True)  # written, but no pointer names it: free the space
        if isinstance(exc, DiskFullError):
            raise DiskFullError(exc.path, files.last_complete_checkpoint(checkpoint_dir)) from None
        if is_disk_full(exc):
            raise DiskFullError(writing, files.last_complete_checkpoint(checkpoint_dir)) from None
        raise
    protocol.prune_checkpoints(checkpoint_dir)
    return final


def resolve_checkpoint(run_dir: Path, which: str = "last", log: Callable[[str], None] = _stderr) -> Path:
    """The checkpoint directory for ``which``: ``last``, ``best``, or a path to a checkpoint dir.

    ``last`` or ``best`` that is missing, unreadable, outside ``checkpoints/`` or corrupt falls
    back to the newest checkpoint that verifies (``log`` says which and why); an explicit path
    is used as given and verified when loaded.
    """
    candidate = Path(which)
    if which not in {"last", "best"}:
        if (candidate / files.MODEL_FILE).exists():
            return candidate
        if candidate.name == files.MODEL_FILE and candidate.exists():
            return candidate.parent
        raise CheckpointError(
            f"{candidate}: not a checkpoint directory (expected {files.MODEL_FILE} and {files.STATE_FILE} in it)"
        )
    checkpoint_dir = Path(run_dir) / "checkpoints"
    protocol.recover_checkpoints(checkpoint_dir)
    record, problem = files.read_pointer(checkpoint_dir, which)
    if record is None and which == "best" and not (checkpoint_dir / "best.json").exists():
        return resolve_checkpoint(run_dir, "last", log)  # no validation ran: best is last
    if record is not None:
        target = checkpoint_dir / record["dir"]
        try:
            files.verify_checkpoint(target, record)
            return target
        except CheckpointError as exc:
            problem = str(exc)
    complete = files.complete_dirs(checkpoint_dir)
    if not complete:
        pending, _ = files.read_pointer(checkpoint_dir, files.PENDING)  # a pending one is not saved until proven
        unproven = pending["dir"] if pending is not None else None
        saved = (
            sorted(
                p.name
                for p in checkpoint_dir.iterdir()
                if p.is_dir() and p.name.startswith("step-") and p.name != unproven
            )
            if checkpoint_dir.is_dir()
            else []
        )
        if saved:
            raise CheckpointError(
                f"{problem}; {len(saved)} checkpoint folder(s) in {checkpoint_dir} ({', '.join(saved[:3])}"
                f"{', ...' if len(saved) > 3 else ''}) and none verifies against its manifest: they were changed "
                "or cut after writing; restore them from a copy or train again"
            )
        raise CheckpointError(
            f"{problem}; no complete checkpoint in {checkpoint_dir} (the run saved none yet; checkpoints "
            "are written every train.checkpoint_every steps, at the end and on SIGINT/SIGTERM)"
        )
    step, path = complete[0]
    log(f"warning: {problem}; using the newest complete checkpoint instead: {path} (step {step})")
    return path


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and state of a checkpoint directory, verified against its manifest.

    Never unpickles code (``weights_only=True``). The bytes that are hashed are the bytes that
    are loaded, so nothing can change between the check and the load.
    """
    path = Path(path)
    manifest = files.read_manifest(path)
    model_bytes = files.verified_bytes(path, manifest, files.MODEL_FILE)
    state_bytes = files.verified_bytes(path, manifest, files.STATE_FILE)
    try:
        tensors = load_safetensors(model_bytes)
        if str(map_location) != "cpu":
            tensors = {k: v.to(map_location) for k, v in tensors.items()}
        state = torch.load(io.BytesIO(state_bytes), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files of any kind
        raise CheckpointError(f"{path}: unreadable checkpoint ({describe_load_error(exc)})") from None
    if not isinstance(state, dict) or state.get("checkpoint_id") != manifest.get("checkpoint_id"):
        raise CheckpointError(f"{path}: {files.STATE_FILE} does not belong to this checkpoint (checkpoint ids differ)")
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
    expected = module.state_dict()
    shapes = [
        f"{name}: {tuple(value.shape)} in the checkpoint, {tuple(expected[name].shape)} in the model"
        for name, value in own.items()
        if name in expected and isinstance(value, torch.Tensor) and value.shape != expected[name].shape
    ]
    if shapes:
        raise CheckpointError(
            f"{source}: the {prefix} weights do not fit the model built from the run file ({'; '.join(shapes[:3])}"
            f"{'; ...' if len(shapes) > 3 else ''}); was the [model] section changed since the checkpoint was "
            "written?"
        )
    try:
        result = module.load_state_dict(own, strict=False)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())  # one line
        raise CheckpointError(
            f"{source}: the {prefix} weights do not fit the model built from the run file ({reason}); "
            "was the [model] section changed since the checkpoint was written?"
        ) from None
    missing = [k for k in result.missing_keys]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the {prefix} weights do not match the model built from the run file "
            f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}); "
            "was the [model] section changed since the checkpoint was written?"
        )
