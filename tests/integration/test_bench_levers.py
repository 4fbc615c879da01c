"""bench/recipe_levers.py trains each lever variant and tables what it gave (a tiny smoke run on CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


def tiny_recipe(tmp_path: Path) -> Path:
    """The recipe's run file at a size that trains in seconds."""
    recipe = (ROOT / "examples" / "small" / "tokenizer.toml").read_text(encoding="utf-8")
    tiny = recipe.replace("num_train = 4096", "num_train = 64").replace("num_val = 256", "num_val = 16")
    tiny = tiny.replace("batch_size = 32", "batch_size = 8").replace("warmup_steps = 100", "warmup_steps = 0")
    path = tmp_path / "tiny.toml"
    path.write_text(tiny, encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_lever_bench_trains_each_variant_and_tables_it(tmp_path):
    import recipe_levers

    run_file = tiny_recipe(tmp_path)
    out = tmp_path / "levers"
    args = ["--run-file", str(run_file), "--out", str(out), "--steps", "2", "--threads", "1"]
    assert recipe_levers.main([*args, "--variants", "plain,restarts"]) == 0
    record = json.loads((out / "levers.json").read_text())
    assert [row["variant"] for row in record["rows"]] == ["plain", "restarts"] and record["steps"] == 2
    for row in record["rows"]:
        assert row["psnr"] > 0 and 0 < row["usage"] <= 1 and Path(row["run_dir"]).is_dir()
        assert row["seconds"] > 0 and row["cpu_seconds"] > 0  # wall-clock and CPU time of the run's process
    table = (out / "levers.md").read_text()
    assert "+ dead-code restarts (threshold 1)" in table and "CPU:" in table and "| CPU time |" in table
    resolved = (Path(record["rows"][0]["run_dir"]) / "resolved.toml").read_text()
    assert 'lr_schedule = "constant"' in resolved and 'precision = "fp32"' in resolved  # the plain tokenizer
    assert "[[alignment]]" not in resolved


@pytest.mark.slow
def test_keep_goes_on_from_the_rows_measured_and_a_variant_with_a_plus_runs(tmp_path):
    import recipe_levers

    run_file = tiny_recipe(tmp_path)
    out = tmp_path / "levers"
    args = ["--run-file", str(run_file), "--out", str(out), "--steps", "2", "--threads", "1"]
    assert recipe_levers.main([*args, "--variants", "plain"]) == 0
    first = json.loads((out / "levers.json").read_text())["rows"][0]
    assert recipe_levers.main([*args, "--variants", "plain,recipe+lg", "--keep"]) == 0
    rows = json.loads((out / "levers.json").read_text())["rows"]
    assert rows[0] == first  # kept, not measured again
    assert rows[1]["variant"] == "recipe+lg" and Path(rows[1]["run_dir"]).parent.name == "recipe-with-lg"
    # another number of steps is another measurement: nothing is kept
    assert recipe_levers.main([*args[:-4], "--steps", "3", "--threads", "1", "--variants", "plain", "--keep"]) == 0
    assert json.loads((out / "levers.json").read_text())["rows"][0]["run_dir"] != first["run_dir"]
