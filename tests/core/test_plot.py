"""``lgvq plot`` and the curves of ``lgvq compare``: metrics.jsonl read back, panels drawn, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lgvq_core.cli import main
from lgvq_core.errors import LgvqError, RunDirError
from lgvq_core.runner.plot import _mean_curve, compare_figures, plot_runs, read_curves

pytest.importorskip("matplotlib", reason="lgvq-core[plot] is installed by requirements-dev.txt")


def run_dir_with(root: Path, name: str, records: list[dict], tail: str = "") -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (run_dir / "metrics.jsonl").write_text(text)
    return run_dir


def lines(loss: list[float], psnr: list[float]) -> list[dict]:
    train = [
        {"step": i + 1, "split": "train", "loss": v, "lr": 0.1, "epoch": 0, "images_seen": 4, "elapsed_s": 1.0}
        for i, v in enumerate(loss)
    ]
    val = [{"step": 2 * (i + 1), "split": "val", "psnr": v, "loss": v / 10} for i, v in enumerate(psnr)]
    return train + val


def test_curves_are_the_finite_numbers_of_each_split_without_bookkeeping(tmp_path):
    records = lines([3.0, 2.0], [10.0]) + [
        {"step": 3, "split": "train", "loss": float("nan"), "ok": True},
        {"step": "x", "split": "train", "loss": 1.0},
    ]
    run_dir = run_dir_with(tmp_path, "a", records, tail='{"step": 4, "split": "tra')  # a line a crash cut
    assert read_curves(run_dir) == {
        "train/loss": [(1, 3.0), (2, 2.0)],
        "train/lr": [(1, 0.1), (2, 0.1)],
        "val/psnr": [(2, 10.0)],
        "val/loss": [(2, 1.0)],
    }


def test_runs_are_overlaid_one_panel_per_curve_in_an_svg_with_their_labels(tmp_path):
    a = run_dir_with(tmp_path, "a", lines([3.0, 2.0, 1.5], [10.0]))
    b = run_dir_with(tmp_path, "b", lines([2.5, 2.2, 2.0], [11.0]))
    out = plot_runs([a, b], tmp_path / "curves.svg", labels=["LG-VQ", "baseline"])
    svg = out.read_text()
    for title in ("train/loss", "train/lr", "val/psnr", "val/loss"):
        assert f">{title}<" in svg
    assert ">LG-VQ<" in svg and ">baseline<" in svg
    assert svg.index(">train/loss<") < svg.index(">train/lr<") < svg.index(">val/loss<") < svg.index(">val/psnr<")


def test_a_png_of_the_chosen_metrics_by_short_or_full_name(tmp_path):
    a = run_dir_with(tmp_path, "a", lines([3.0, 2.0], [10.0, 12.0]))
    one = plot_runs([a], tmp_path / "one.png", metrics=["psnr"])
    both = plot_runs([a], tmp_path / "both.png", metrics=["loss"])  # train/loss and val/loss
    with Image.open(one) as first, Image.open(both) as second:
        assert first.format == "PNG" and second.width > first.width  # two panels side by side
    plot_runs([a], tmp_path / "full.png", metrics=["val/loss"])


def test_plot_errors_name_what_to_fix(tmp_path):
    a = run_dir_with(tmp_path, "a", lines([3.0], []))
    with pytest.raises(LgvqError, match=r"use one of \.png, \.svg, \.pdf"):
        plot_runs([a], tmp_path / "x.jpg")
    with pytest.raises(LgvqError, match=r"--metrics 'psnr': no such curve; the runs have: train/loss, train/lr"):
        plot_runs([a], tmp_path / "x.png", metrics=["psnr"])
    with pytest.raises(LgvqError, match=r"--labels: got 2 label\(s\) for 1"):
        plot_runs([a], tmp_path / "x.png", labels=["a", "b"])
    with pytest.raises(RunDirError, match="no such folder"):
        plot_runs([tmp_path / "missing"], tmp_path / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no metrics.jsonl"):
        read_curves(tmp_path / "empty")


def test_lgvq_plot_writes_into_the_first_run_directory_by_default(tmp_path, capsys):
    a = run_dir_with(tmp_path, "a", lines([3.0, 2.0], [10.0]))
    assert main(["plot", str(a)]) == 0
    assert (a / "plot.png").is_file() and f"wrote {a / 'plot.png'}" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nope")]) == 1
    assert "lgvq plot: error:" in capsys.readouterr().err


def test_the_mean_of_seeds_is_taken_at_the_steps_every_seed_logged():
    assert _mean_curve([[(1, 1.0), (2, 3.0)], [(1, 3.0), (2, 5.0), (3, 9.0)]]) == [(1, 2.0), (2, 4.0)]


def test_compare_figures_one_per_curve(tmp_path):
    arms = {
        "LG-VQ": {0: {"run_dir": run_dir_with(tmp_path, "l0", lines([3.0, 2.0], [10.0]))},
                  1: {"run_dir": run_dir_with(tmp_path, "l1", lines([3.5, 2.5], [11.0]))}},
        "baseline": {0: {"run_dir": run_dir_with(tmp_path, "b0", lines([3.0, 2.8], [9.0]))}},
    }  # fmt: skip
    written = compare_figures(arms, tmp_path / "cmp")
    assert sorted(p.name for p in written) == ["train-loss.png", "train-lr.png", "val-loss.png", "val-psnr.png"]
    assert all(p.parent == tmp_path / "cmp" / "figures" for p in written)
