"""What a run tells its user and writes about itself: metrics records, skipped items, the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lgvq_core.registry import get_registry
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.validation import SHOWN


@dataclass
class RunResult:
    """What ``train`` returns: where the run is, how far it got and why it stopped."""

    run_dir: Path
    step: int
    stop_reason: str
    final_metrics: dict[str, float]
    images_per_second: float
    seconds: float
    val_metrics: dict[str, float] = field(default_factory=dict)
    skipped_items: list[tuple[int, str]] = field(default_factory=list)
    #: The signal that stopped the run (``None`` otherwise).
    stop_signal: int | None = None

    @property
    def exit_code(self) -> int:
        """0 for a finished run; 128 + the signal number for one stopped by a signal (the shell's rule)."""
        return 128 + self.stop_signal if self.stop_signal is not None else 0


def train_record(run: RunContext, metrics: dict[str, float], started: float, images_per_step: int) -> dict[str, Any]:
    """One ``metrics.jsonl`` line for a training step."""
    record: dict[str, Any] = {"step": run.step, "split": "train"}
    record.update(metrics)
    optimizer = run.optimizers.model if run.optimizers is not None else None
    record["lr"] = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else run.lr  # as scheduled
    per_epoch = max(1, len(run.train_data) // (run.config.train.batch_size * run.world_size))
    record["epoch"] = run.batches_seen // per_epoch
    record["images_seen"] = run.step * images_per_step
    record["elapsed_s"] = round(time.perf_counter() - started, 3)
    return record


def report_skipped(run: RunContext) -> None:
    """One line per unreadable item (an item skipped in several epochs is listed once)."""
    counts: dict[int, int] = {}
    messages: dict[int, str] = {}
    for index, message in run.skipped_items:
        counts[index] = counts.get(index, 0) + 1
        messages[index] = message
    run.log(f"skipped {len(counts)} unreadable item(s) {len(run.skipped_items)} time(s) (train.skip_bad_items = true):")
    for index in sorted(counts)[:20]:
        run.log(f"  item {index} ({counts[index]}x): {messages[index]}")
    if len(counts) > 20:
        run.log(f"  ... and {len(counts) - 20} more")


def used_components(config) -> list[dict[str, Any]]:
    """Which plugin and distribution provided each component the run file names (for plugins.json)."""
    registry = get_registry()
    if hasattr(config, "downstream"):
        used = [("downstream", config.downstream), ("dataset", config.data)]
    else:
        used = [("backbone", config.model.backbone), ("quantizer", config.model.quantizer), ("dataset", config.data)]
    if config.text_encoder is not None:
        used.append(("text_encoder", config.text_encoder))
    used += [("alignment_loss", c) for c in getattr(config, "alignment", ())]
    used += [("task", c) for c in config.tasks]
    used += [("callback", c) for c in config.callbacks]
    used += [("logger", c) for c in config.loggers]
    records = []
    for kind, component in used:
        entry = registry.get(kind, component.type)
        records.append(
            {
                "kind": kind,
                "name": entry.name,
                "plugin": entry.plugin,
                "distribution": entry.distribution,
                "version": entry.version,
            }
        )
    return records


def describe_result(result: RunResult) -> str:
    """The few lines ``lgvq run`` prints at the end."""
    terms = " ".join(
        f"{k} {v:.4g}" for k, v in result.final_metrics.items() if k == "loss" or k.endswith("_loss") or k == "d_total"
    )
    lines = [
        f"done: {result.step} steps ({result.stop_reason}) in {result.seconds:.1f} s, "
        f"{result.images_per_second:.1f} images/s",
        f"final losses: {terms}",
    ]
    if result.val_metrics:
        picked = [k for k in result.val_metrics if k in SHOWN and k != "loss"]
        if not picked:  # a downstream model's own terms: all of them, its loss first
            picked = sorted(result.val_metrics, key=lambda k: (k != "loss", k))[:8]
        shown = " ".join(f"{k} {result.val_metrics[k]:.4g}" for k in picked)
        lines.append(f"validation: {shown}")
    lines.append(f"run directory: {result.run_dir}")
    return "\n".join(lines)
