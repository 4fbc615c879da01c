"""Writing the ``folder`` export format (``lgvq export RUN_DIR --format folder OUT``); the layout and
the reader are :mod:`lgvq_core.interop.tokenizer_folder`."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from lgvq_core.errors import ExportError
from lgvq_core.interop.exporters import FolderExportConfig
from lgvq_core.interop.tokenizer_folder import CARD, CONFIG, FORMAT, FORMAT_VERSION, MARKER, PREFIX, WEIGHTS
from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner.load import uses_text_at_build


class FolderExporter:
    def __init__(self, config: FolderExportConfig) -> None:
        self.config = config

    def check(self, config: Any) -> None:
        if uses_text_at_build(config):
            raise ExportError(
                f"$.model.quantizer ({config.model.quantizer.type}): this tokenizer reads the text encoder and the "
                "training captions when it is built, and a tokenizer folder carries neither; load it from its run "
                "directory with load_tokenizer(run_dir)"
            )

    def export(self, source: Any, out_dir: Path, log: Callable[[str], None]) -> None:
        module = source.tokenizer.module
        extra = [key for key, value in module.state_dict().items() if not isinstance(value, torch.Tensor)]
        if extra:
            raise ExportError(
                f"the tokenizer keeps non-tensor state ({', '.join(extra[:3])}), which a safetensors file cannot "
                "hold; load it from its run directory with load_tokenizer(run_dir)"
            )
        weights = save_safetensors(
            ckpt.model_tensors({PREFIX: module}), metadata={"format": "pt", "step": str(source.step)}
        )
        (out_dir / WEIGHTS).write_bytes(weights)
        (out_dir / CONFIG).write_text(source.run_file_text, encoding="utf-8")
        record = marker_record(source, hashlib.sha256(weights).hexdigest())
        (out_dir / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        title = self.config.title or f"{source.config.run.name} (lgvq tokenizer)"
        (out_dir / CARD).write_text(model_card(title, record), encoding="utf-8")
        log(f"folder: {len(module.state_dict())} tensors, step {source.step}")


def build_folder_exporter(config: FolderExportConfig, context: Any = None) -> FolderExporter:
    return FolderExporter(config)


def marker_record(source: Any, weights_sha256: str) -> dict[str, Any]:
    tokenizer = source.tokenizer
    model = source.config.model
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": WEIGHTS,
        "weights_sha256": weights_sha256,
        "config": CONFIG,
        "image_size": tokenizer.image_size,
        "in_channels": tokenizer.in_channels,
        "backbone": model.backbone.type,
        "quantizer": model.quantizer.type if model.quantizer is not None else None,
        "codebook_size": tokenizer.codebook_size,
        "code_dim": int(tokenizer.codebook.shape[-1]),
        "step": source.step,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": source.provenance(),
        "evaluation": {
            task: {"step": record.get("step"), "metrics": record.get("metrics"), "refused": record.get("refused")}
            for task, record in source.evaluation.items()
        },
    }


def _numbers(metrics: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Flat ``(dotted.name, value)`` pairs of the numbers in a task's metrics (nested dicts walked)."""
    if isinstance(metrics, bool) or metrics is None:
        return []
    if isinstance(metrics, (int, float)):
        return [(prefix, float(metrics))] if math.isfinite(metrics) else []
    if isinstance(metrics, dict):
        return [
            pair for key, value in metrics.items() for pair in _numbers(value, f"{prefix}.{key}" if prefix else key)
        ]
    return []


def model_card(title: str, record: dict[str, Any]) -> str:
    """README.md of a tokenizer folder, from its marker record."""
    origin = record["provenance"]
    size = record["image_size"]
    sizes = f"{size}×{size} images" if size else "images"
    lines = [
        f"# {title}",
        "",
        f"A `{record['backbone']}` image tokenizer with a `{record['quantizer']}` codebook of "
        f"{record['codebook_size']} codes of width {record['code_dim']}, trained with "
        f"lgvq for {record['step']} steps on {sizes} with {record['in_channels']} "
        "channel(s). It turns an image into a grid of code indices and back.",
        "",
        "## Use",
        "",
        "```python",
        "from lgvq_core.api import load_tokenizer",
        "",
        'tokenizer = load_tokenizer("path/to/this/folder")',
        "codes = tokenizer.encode(images)   # B×C×H×W in [-1, 1] -> code indices",
        "recon = tokenizer.decode(codes)    # -> B×C×H×W",
        "```",
        "",
        "Needs "
        + ", ".join(
            f"`{p['distribution']}` (provides {kind} `{p['name']}`; exported with {p['version']})"
            for kind, p in sorted(origin["providers"].items())
        )
        + ".",
        "",
        "## Evaluation",
        "",
    ]
    rows = []
    for task, result in sorted(record["evaluation"].items()):
        note = "" if result.get("step") == record["step"] else f" (step {result.get('step')})"
        if result.get("refused"):
            rows.append(f"| {task}{note} | refused | {result['refused']} |")
        rows += [f"| {task}{note} | {name} | {value:.6g} |" for name, value in _numbers(result.get("metrics"))]
    if rows:
        lines += [
            "From the run directory's `eval/` when exported (`lgvq eval`); a step in brackets differs from "
            "the step of these weights.",
            "",
            "| task | metric | value |",
            "|---|---|---|",
            *rows,
        ]
    else:
        lines += ["None: the run directory had no `eval/*.json` when exported (run `lgvq eval RUN_DIR`, then export)."]
    lines += [
        "",
        "## Provenance",
        "",
        f"- run directory: `{origin['run_dir']}`",
        f"- checkpoint: `{origin['checkpoint']}` (step {origin['step']})",
        f"- checkpoint model file SHA-256: `{origin['checkpoint_sha256']}`",
        f"- `{WEIGHTS}` SHA-256: `{record['weights_sha256']}`",
        f"- exported {record['exported']} with lgvq-core {origin['lgvq_version']}",
        f"- run file: `{CONFIG}` (the run's resolved.toml: every default filled in)",
        "",
    ]
    return "\n".join(lines)
