"""Checkpoints that a crash cannot corrupt, that are verified when loaded and never run code.

Layout (``checkpoints/`` of a run directory)::

    step-0000120-<id>/model.safetensors  tokenizer (``tokenizer.*``), alignment heads (``alignment.*``),
                                         discriminator (``discriminator.*``); never the text encoder
    step-0000120-<id>/state.pt           optimizers, scalers, step, data position, RNG states, callback
                                         state: plain tensors and containers (weights_only=True)
    step-0000120-<id>/manifest.json      step, id, and the SHA-256 and size of both files
    last.json, best.json, previous.json  pointers: {"dir": "step-0000120-<id>", "step": 120, ...}
    pending.json                         a checkpoint written but not yet shown good (see below)

Why it survives a crash at any moment: every checkpoint directory has a name never used before,
is written under a temporary name (every file fsynced, the manifest last) and renamed into place
once; nothing renames or deletes a directory a pointer names. Pointers are replaced atomically,
``previous`` (the checkpoint ``last`` named before) first. Directories no pointer names are
removed only after the pointers are written. So between any two filesystem operations the old
pointers still name complete directories.

Why nothing diverged is kept: the training loop writes a periodic checkpoint as ``pending`` and
moves ``last`` to it (:func:`promote_pending`) only once a finite loss has been computed from its
weights (the next step's); a NaN discards it (:func:`discard_pending`). A pending checkpoint is
never a fallback.

Why it is verified: a checkpoint loads only if both files match the SHA-256 of its manifest, so a
flipped bit is an error, never a silently different model. A missing, unreadable or corrupt
``last`` falls back to the newest checkpoint that verifies (``previous``, ``best`` or any other
complete directory), saying so. A pointer may only name a directory directly inside
``checkpoints/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from lgvq_core.atomic import fsync_dir, is_disk_full, write_json_atomic
from lgvq_core.errors import CheckpointError, DiskFullError
from lgvq_core.safe_load import describe_load_error

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2
POINTERS = ("last", "previous", "best")
PENDING = "pending"
_DIR_NAME = re.compile(r"^step-\d{7,}-[0-9a-f]{8,32}$")


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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    recover_checkpoints(checkpoint_dir)
    checkpoint_id = uuid.uuid4().hex
    name = f"step-{step:07d}-{checkpoint_id[:8]}"
    final = checkpoint_dir / name
    tmp = checkpoint_dir / f".{name}.tmp"
    state = {**state, "checkpoint_id": checkpoint_id, "format_version": FORMAT_VERSION, "step": step}
    model_bytes = save_safetensors(tensors, metadata={"checkpoint_id": checkpoint_id, "step": str(step)})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    state_bytes = buffer.getvalue()
    manifest = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "checkpoint_id": checkpoint_id,
        "files": {
            MODEL_FILE: {"sha256": _sha256(model_bytes), "bytes": len(model_bytes)},
            STATE_FILE: {"sha256": _sha256(state_bytes), "bytes": len(state_bytes)},
        },
    }
    writing = tmp
    try:
        tmp.mkdir()
        for file, data in (
            (MODEL_FILE, model_bytes),
            (STATE_FILE, state_bytes),
            (MANIFEST_FILE, json.dumps(manifest, indent=2).encode()),
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
                _keep_previous(checkpoint_dir, name)
                writing = checkpoint_dir / f"{pointer}.json"
            write_json_atomic(writing, record)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and final.exists() and name not in referenced_dirs(checkpoint_dir):
            shutil.rmtree(final, ignore_errors=True)  # written, but no pointer names it: free the space
        if isinstance(exc, DiskFullError):
            raise DiskFullError(exc.path, last_complete_checkpoint(checkpoint_dir)) from None
        if is_disk_full(exc):
            raise DiskFullError(writing, last_complete_checkpoint(checkpoint_dir)) from None
        raise
    prune_checkpoints(checkpoint_dir)
    return final


def _keep_previous(checkpoint_dir: Path, new_name: str) -> None:
    """Point ``previous`` at what ``last`` names now, before ``last`` moves on."""
    try:
        old = json.loads((checkpoint_dir / "last.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict) or old.get("dir") == new_name or _pointer_problem(checkpoint_dir, old) is not None:
        return
    write_json_atomic(checkpoint_dir / "previous.json", old)


def _read_pointer(checkpoint_dir: Path, pointer: str) -> tuple[dict[str, Any] | None, str | None]:
    """A pointer's record, or ``None`` and what is wrong with it."""
    path = checkpoint_dir / f"{pointer}.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable ({exc})"
    problem = _pointer_problem(checkpoint_dir, record)
    if problem is not None:
        return None, f"{path}: {problem}"
    return record, None


def _pointer_problem(checkpoint_dir: Path, record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("dir"), str):
        return 'not a checkpoint pointer (expected {"dir": ..., "step": ...})'
    name = record["dir"]
    if not _DIR_NAME.match(name) and not re.match(r"^step-\d+$", name):
        return f"names {name!r}, which is not a checkpoint directory inside {checkpoint_dir}"
    target = (checkpoint_dir / name).resolve()
    if target.parent != checkpoint_dir.resolve():
        return f"names {name!r}, which resolves outside {checkpoint_dir} (refused)"
    return None


def promote_pending(checkpoint_dir: Path, pointers: tuple[str, ...] = ("last",)) -> Path | None:
    """Point ``pointers`` at the pending checkpoint (its weights are now shown good); returns it.

    ``last`` moves only now, so the previous good checkpoint is kept until this one is proven.
    """
    return share_pointer(checkpoint_dir, PENDING, pointers, release=True)


def share_pointer(checkpoint_dir: Path, source: str, pointers: tuple[str, ...], release: bool = False) -> Path | None:
    """Point ``pointers`` at the checkpoint ``source`` names (one folder, no second copy); returns it.

    ``release``: remove the ``source`` pointer once the others name its checkpoint (``pending``).
    """
    record, _ = _read_pointer(checkpoint_dir, source)
    if record is None:
        return None
    try:
        for pointer in pointers:
            if pointer == "last":
                _keep_previous(checkpoint_dir, record["dir"])
            write_json_atomic(checkpoint_dir / f"{pointer}.json", record)
        if release:
            (checkpoint_dir / f"{source}.json").unlink(missing_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(checkpoint_dir / "last.json", last_complete_checkpoint(checkpoint_dir)) from None
        raise
    prune_checkpoints(checkpoint_dir)
    return checkpoint_dir / record["dir"]


def pointer_step(checkpoint_dir: Path, pointer: str) -> int | None:
    """The step a pointer (``last``, ``best``, ``pending``) names (``None``: no usable pointer)."""
    record, _ = _read_pointer(checkpoint_dir, pointer)
    try:
        return None if record is None else int(record.get("step", -1))
    except (TypeError, ValueError):
        return None


def pending_step(checkpoint_dir: Path) -> int | None:
    """The step of the pending checkpoint (``None`` when there is none)."""
    return pointer_step(checkpoint_dir, PENDING)


def discard_pending(checkpoint_dir: Path) -> None:
    """Drop the pending checkpoint: its weights produced a non-finite loss (or were never checked)."""
    if (checkpoint_dir / f"{PENDING}.json").exists():
        (checkpoint_dir / f"{PENDING}.json").unlink()
        prune_checkpoints(checkpoint_dir)


def good_checkpoint(checkpoint_dir: Path) -> tuple[Path | None, int | None]:
    """The last good checkpoint and its step (``(None, None)`` when the run has none)."""
    path = last_complete_checkpoint(checkpoint_dir)
    if path is None:
        return None, None
    try:
        return path, int(read_manifest(path)["step"])
    except CheckpointError:
        return path, None


def referenced_dirs(checkpoint_dir: Path) -> set[str]:
    names = set()
    for pointer in checkpoint_dir.glob("*.json"):
        try:
            record = json.loads(pointer.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("dir"), str):
            names.add(record["dir"])
    return names


def recover_checkpoints(checkpoint_dir: Path) -> None:
    """Move back a ``.step-N.<id>.old`` copy whose pointer names a missing ``step-N``.

    Checkpoints written by lgvq before format 2 replaced a same-step directory through an
    ``.old`` rename; a crash between the two renames left the only copy there.
    """
    if not checkpoint_dir.is_dir():
        return
    for name in referenced_dirs(checkpoint_dir):
        if (checkpoint_dir / name).exists() or "/" in name or name.startswith("."):
            continue
        for stale in sorted(checkpoint_dir.glob(f".{name}.*.old")):
            if (stale / MODEL_FILE).exists() and (stale / STATE_FILE).exists():
                os.replace(stale, checkpoint_dir / name)
                break


def prune_checkpoints(checkpoint_dir: Path) -> None:
    """Remove checkpoint directories no pointer refers to (and stale temporaries)."""
    recover_checkpoints(checkpoint_dir)
    keep = referenced_dirs(checkpoint_dir)
    for path in checkpoint_dir.iterdir():
        if path.is_dir() and path.name not in keep and (path.name.startswith("step-") or path.name.startswith(".")):
            shutil.rmtree(path, ignore_errors=True)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a checkpoint directory (raises :class:`CheckpointError` when unusable)."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        files = manifest["files"]
        for file in (MODEL_FILE, STATE_FILE):
            str(files[file]["sha256"])
            int(files[file]["bytes"])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MANIFEST_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / MANIFEST_FILE}: unreadable checkpoint manifest ({exc})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version > FORMAT_VERSION:
            advice = "it was written by a newer lgvq-core; upgrade lgvq-core to read it"
        else:
            advice = "it was not written by this lgvq-core's checkpoint code; train the run again or convert it"
        raise CheckpointError(
            f"{path / MANIFEST_FILE}: checkpoint format {version!r}, this lgvq-core reads format {FORMAT_VERSION}: "
            f"{advice}"
        )
    return manifest


def _verified_bytes(path: Path, manifest: dict[str, Any], file: str) -> bytes:
    try:
        data = (path / file).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {file})") from None
    except OSError as exc:
        raise CheckpointError(f"{path / file}: unreadable ({exc})") from None
    expected = manifest["files"][file]
    if len(data) != int(expected["bytes"]) or _sha256(data) != expected["sha256"]:
        raise CheckpointError(
            f"{path / file}: content does not match the checkpoint's manifest (SHA-256 differs; the file "
            "is corrupt or was modified). Use another checkpoint (e.g. --checkpoint best, or resume "
            "falls back to the newest one that verifies)"
        )
    return data


def verify_checkpoint(path: Path, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest (and the hashes its pointer ``record``
    holds, when given); returns the manifest."""
    manifest = read_manifest(path)
    if record is not None and "files" in record and record["files"] != manifest["files"]:
        raise CheckpointError(
            f"{path}: its manifest does not match the SHA-256 its pointer recorded (the folder was changed)"
        )
    for file in (MODEL_FILE, STATE_FILE):
        _verified_bytes(path, manifest, file)
    return manifest


def _complete_dirs(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories that verify, newest step first."""
    found = []
    if not checkpoint_dir.is_dir():
        return found
    pending, _ = _read_pointer(checkpoint_dir, PENDING)
    unproven = pending["dir"] if pending is not None else None
    for path in checkpoint_dir.iterdir():
        if not path.is_dir() or not path.name.startswith("step-") or path.is_symlink() or path.name == unproven:
            continue
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError:
            continue
        found.append((int(manifest["step"]), path))
    found.sort(key=lambda item: (item[0], item[1].stat().st_mtime_ns), reverse=True)
    return found


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint ``last`` names when it verifies, else the newest one that does (``None``: none)."""
    record, _ = _read_pointer(checkpoint_dir, "last")
    if record is not None:
        try:
            verify_checkpoint(checkpoint_dir / record["dir"], record)
            return checkpoint_dir / record["dir"]
        except CheckpointError:
            pass
    complete = _complete_dirs(checkpoint_dir)
    return complete[0][1] if complete else None


def disk_full_error(path: Path) -> DiskFullError:
    """A :class:`DiskFullError` for ``path`` naming the last complete checkpoint of its run.

    The run directory is the nearest folder above ``path`` with a ``checkpoints/`` folder.
    """
    for folder in list(Path(path).parents)[:4]:
        if (folder / "checkpoints").is_dir():
            return DiskFullError(path, last_complete_checkpoint(folder / "checkpoints"))
    return DiskFullError(path, None)


def resolve_checkpoint(run_dir: Path, which: str = "last", log: Callable[[str], None] = _stderr) -> Path:
    """The checkpoint directory for ``which``: ``last``, ``best``, or a path to a checkpoint dir.

    ``last`` or ``best`` that is missing, unreadable, outside ``checkpoints/`` or corrupt falls
    back to the newest checkpoint that verifies (``log`` says which and why); an explicit path
    is used as given and verified when loaded.
    """
    candidate = Path(which)
    if which not in {"last", "best"}:
        if (candidate / MODEL_FILE).exists():
            return candidate
        if candidate.name == MODEL_FILE and candidate.exists():
            return candidate.parent
        raise CheckpointError(f"{candidate}: not a checkpoint directory (expected {MODEL_FILE} and {STATE_FILE} in it)")
    checkpoint_dir = Path(run_dir) / "checkpoints"
    recover_checkpoints(checkpoint_dir)
    record, problem = _read_pointer(checkpoint_dir, which)
    if record is None and which == "best" and not (checkpoint_dir / "best.json").exists():
        return resolve_checkpoint(run_dir, "last", log)  # no validation ran: best is last
    if record is not None:
        target = checkpoint_dir / record["dir"]
        try:
            verify_checkpoint(target, record)
            return target
        except CheckpointError as exc:
            problem = str(exc)
    complete = _complete_dirs(checkpoint_dir)
    if not complete:
        pending, _ = _read_pointer(checkpoint_dir, PENDING)  # a pending one is not saved until proven
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
    manifest = read_manifest(path)
    model_bytes = _verified_bytes(path, manifest, MODEL_FILE)
    state_bytes = _verified_bytes(path, manifest, STATE_FILE)
    try:
        tensors = load_safetensors(model_bytes)
        if str(map_location) != "cpu":
            tensors = {k: v.to(map_location) for k, v in tensors.items()}
        state = torch.load(io.BytesIO(state_bytes), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files of any kind
        raise CheckpointError(f"{path}: unreadable checkpoint ({describe_load_error(exc)})") from None
    if not isinstance(state, dict) or state.get("checkpoint_id") != manifest.get("checkpoint_id"):
        raise CheckpointError(f"{path}: {STATE_FILE} does not belong to this checkpoint (checkpoint ids differ)")
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
