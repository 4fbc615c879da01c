"""Loss curves without a tracker: ``lgvq plot`` and the figures of ``lgvq compare`` (matplotlib).

A curve is one number of ``metrics.jsonl`` over steps: ``train/<term>`` for every loss term and
statistic of the training lines, ``val/<metric>`` for every validation number. ``lgvq plot`` draws
one panel per curve with several runs overlaid; ``lgvq compare`` writes one figure per curve in
``figures/``, each arm's seeds as thin lines and their mean (over the steps every seed logged) as a
thick one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lgvq_core.atomic import write_bytes_atomic
from lgvq_core.errors import LgvqError, RunDirError
from lgvq_core.runner.rundir import read_metrics

INSTALL = "pip install 'lgvq-core[plot]'"
#: Bookkeeping numbers of a training line, not curves worth a panel.
NOT_CURVES = frozenset({"step", "split", "epoch", "images_seen", "elapsed_s"})
FORMATS = (".png", ".svg", ".pdf")

Curves = dict[str, list[tuple[int, float]]]


def _pyplot():
    try:
        import matplotlib  # lazy: an optional extra, needed only to draw

        matplotlib.use("Agg", force=True)
        matplotlib.rcParams["svg.fonttype"] = "none"  # an SVG's titles and labels stay text
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError as exc:
        raise LgvqError(f"drawing curves needs matplotlib ({exc}): {INSTALL}") from None
    return plt, ticker


def read_curves(run_dir: str | Path) -> Curves:
    """``{"train/loss": [(step, value), ...], "val/psnr": [...]}`` of a run, in file order (finite numbers only)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        what = "no such folder" if not run_dir.is_dir() else "no metrics.jsonl: not a run directory `lgvq run` wrote"
        raise RunDirError(f"{run_dir}: {what}")
    curves: Curves = {}
    for record in read_metrics(run_dir):
        split = record.get("split")
        step = record.get("step")
        if split not in ("train", "val") or not isinstance(step, int):
            continue
        for key, value in record.items():
            if key in NOT_CURVES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                curves.setdefault(f"{split}/{key}", []).append((step, float(value)))
    return curves


def _order(names: set[str]) -> list[str]:
    """Training curves first (the total loss leading), then validation ones."""
    return sorted(names, key=lambda n: (not n.startswith("train/"), n not in ("train/loss", "val/loss"), n))


def _save(figure: Any, out: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=out.suffix.lstrip("."), dpi=110, bbox_inches="tight")
    write_bytes_atomic(out, buffer.getvalue())
    return out


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in FORMATS:
        raise LgvqError(f"--out {out}: the figure's format comes from its suffix; use one of {', '.join(FORMATS)}")


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    labels: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> Path:
    """One panel per curve, every run overlaid; written to ``out`` (.png, .svg or .pdf)."""
    out = Path(out)
    _check_out(out)
    if labels is not None and len(labels) != len(run_dirs):
        raise LgvqError(f"--labels: got {len(labels)} label(s) for {len(run_dirs)} run director(ies)")
    runs = [(labels[i] if labels else Path(d).name, read_curves(d)) for i, d in enumerate(run_dirs)]
    available = _order({name for _, curves in runs for name in curves})
    if not available:
        raise RunDirError(f"{', '.join(str(d) for d in run_dirs)}: metrics.jsonl holds no numbers yet")
    names = available
    if metrics:
        wanted = [m if "/" in m else None for m in metrics]
        names = []
        for given, full in zip(metrics, wanted, strict=True):
            found = [full] if full in available else [n for n in available if n.split("/", 1)[1] == given]
            if not found:
                raise LgvqError(f"--metrics {given!r}: no such curve; the runs have: {', '.join(available)}")
            names += [n for n in found if n not in names]
    plt, ticker = _pyplot()
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for panel, name in zip(axes.flat, names, strict=False):
        for label, curves in runs:
            points = curves.get(name)
            if points:
                steps, values = zip(*points, strict=True)
                panel.plot(steps, values, label=label, marker="o" if len(points) < 12 else None, markersize=3)
        panel.set_title(name, fontsize=10)
        panel.set_xlabel("step", fontsize=8)
        panel.tick_params(labelsize=8)
        panel.grid(alpha=0.3)
        panel.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    for panel in list(axes.flat)[len(names) :]:
        panel.set_visible(False)
    figure.tight_layout()
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    if len(runs) > 1 and handles:  # above the panels; the saved figure's bounding box takes it in
        figure.legend(
            handles, legend_labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(4, len(runs)), fontsize=9
        )
    try:
        return _save(figure, out)
    finally:
        plt.close(figure)


def _mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The mean over seeds at the steps every seed logged."""
    common = set.intersection(*(set(step for step, _ in c) for c in curves)) if curves else set()
    by_seed = [dict(c) for c in curves]
    return [(step, sum(seed[step] for seed in by_seed) / len(by_seed)) for step in sorted(common)]


def compare_figures(arms: Mapping[str, Mapping[int, Mapping[str, Any]]], out_dir: str | Path) -> list[Path]:
    """``out_dir/figures/<split>-<metric>.png``: per curve, each arm's seeds (thin) and their mean (thick)."""
    read = {
        arm: {seed: read_curves(info["run_dir"]) for seed, info in sorted(runs.items())} for arm, runs in arms.items()
    }
    names = _order({name for runs in read.values() for curves in runs.values() for name in curves})
    if not names:
        return []
    plt, ticker = _pyplot()
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []
    for name in names:
        figure, panel = plt.subplots(figsize=(5.5, 3.6))
        for i, (arm, runs) in enumerate(read.items()):
            colour = colours[i % len(colours)]
            seeds = [curves[name] for curves in runs.values() if curves.get(name)]
            for points in seeds:
                steps, values = zip(*points, strict=True)
                panel.plot(steps, values, color=colour, alpha=0.35, linewidth=0.9)
            mean = _mean_curve(seeds)
            if mean:
                steps, values = zip(*mean, strict=True)
                panel.plot(steps, values, color=colour, linewidth=2.2, label=f"{arm} (mean of {len(seeds)} seeds)")
        panel.set_title(f"{name}: each seed (thin) and the mean (thick)", fontsize=10)
        panel.set_xlabel("step")
        panel.grid(alpha=0.3)
        panel.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        panel.legend(fontsize=8)
        figure.tight_layout()
        try:
            written.append(_save(figure, folder / f"{name.replace('/', '-')}.png"))
        finally:
            plt.close(figure)
    return written


def plot_from_cli(args: Any) -> int:
    run_dirs = [Path(d) for d in args.run_dirs]
    out = Path(args.out) if args.out else run_dirs[0] / "plot.png"
    written = plot_runs(run_dirs, out, args.labels, args.metrics)
    print(f"wrote {written}")
    return 0
