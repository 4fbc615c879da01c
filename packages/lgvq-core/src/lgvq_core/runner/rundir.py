"""The run directory: ``runs/<name>/<timestamp>-<id>/`` and the files that describe a run."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lgvq_core.atomic import disk_full, is_disk_full, write_json_atomic, write_text_atomic
from lgvq_core.config.describe import dumps_toml, unstructure
from lgvq_core.errors import RunDirError


def create_run_dir(output_dir: str | Path, name: str) -> Path:
    """A new, empty run directory; an existing one is never reused or overwritten."""
    root = Path(output_dir) / name
    for _ in range(20):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {path}: {exc}") from None
        for sub in ("checkpoints", "samples"):
            (path / sub).mkdir()
        return path
    raise RunDirError(f"could not find a free run directory name under {root}")  # pragma: no cover


def resolved_toml(config: Any, overrides: list[str], effective_lr: float) -> str:
    """Every key of the run, defaults included; ``train.lr`` holds the effective learning rate."""
    data = unstructure(config)
    data["train"]["lr"] = effective_lr
    header = [
        "# Resolved run file: every default filled in; train.lr is the learning rate actually used.",
        "# Re-running this file reproduces the run.",
    ]
    if overrides:
        header.append("# Command-line overrides: " + " ".join(f"--set {o}" for o in overrides))
    return "\n".join(header) + "\n\n" + dumps_toml(data)


def write_run_files(
    run_dir: Path,
    source_text: str,
    config: Any,
    overrides: list[str],
    effective_lr: float,
    plugins: dict[str, Any],
    env: str,
    keep_config: bool = False,
) -> None:
    if not keep_config:
        write_text_atomic(run_dir / "config.toml", source_text)
    write_text_atomic(run_dir / "resolved.toml", resolved_toml(config, overrides, effective_lr))
    write_json_atomic(run_dir / "plugins.json", plugins)
    write_text_atomic(run_dir / "env.txt", env)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def cpu_model() -> str:
    """The CPU's model name, as ``lscpu`` shows it (read from /proc/cpuinfo; the platform's word elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def environment_report(device: Any, world_size: int) -> str:
    import importlib.metadata

    import torch

    lines = [
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"command: {' '.join(sys.argv)}",
        f"cwd: {os.getcwd()}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"cpu: {cpu_model()}",
        f"cpu_count: {os.cpu_count()}",
        f"torch: {torch.__version__}",
        f"cuda_available: {torch.cuda.is_available()}",
        f"device: {device}",
        f"world_size: {world_size}",
        f"git_commit: {_git_commit()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"cuda: {torch.version.cuda}; gpu: {torch.cuda.get_device_name(0)}")
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = dist.metadata["Name"] or ""
        if name.lower().startswith("lgvq") or name.lower() in {
            "open_clip_torch",
            "transformers",
            "torchvision",
            "torchmetrics",
            "pluggy",
            "attrs",
            "cattrs",
            "numpy",
        }:
            lines.append(f"package: {name} {dist.version}")
    for key, value in sorted(os.environ.items()):
        if key.startswith("LGVQ_") or key in {"CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "HF_HUB_OFFLINE"}:
            lines.append(f"env: {key}={value}")
    return "\n".join(lines) + "\n"


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (flushed and fsynced).

    A line is whole or absent: when a write fails (a full disk), the file is cut back to its
    length before the write, and a full disk is raised as :class:`DiskFullError`.
    """

    def __init__(self, path: Path, on_write: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        #: Called with each line once it is on disk (the run's loggers).
        self.on_write = on_write

    def truncate_after(self, step: int) -> None:
        """Keep lines up to ``step`` (a resume re-runs the later steps); rewritten atomically."""
        if not self.path.exists():
            return
        kept = [
            r for r in parse_metrics(self.path.read_text(encoding="utf-8", errors="replace")) if _step_of(r) <= step
        ]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        with open(self.path, "ab") as handle:
            start = handle.tell()
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    handle.truncate(start)  # shrinking needs no space
                if is_disk_full(exc):
                    raise disk_full(self.path) from None
                raise
        if self.on_write is not None:
            self.on_write(record)


def _step_of(record: dict[str, Any]) -> int:
    try:
        return int(record.get("step", 0))
    except (TypeError, ValueError):
        return 0


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` text; a line a crash cut short (not JSON) is left out."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (tolerating a line cut by a crash or a full disk)."""
    path = Path(run_dir) / "metrics.jsonl"
    return parse_metrics(path.read_text(encoding="utf-8", errors="replace"))
