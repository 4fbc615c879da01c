"""compare_runs and ``lgvq compare``: evaluated runs side by side, grouped into arms by name and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lgvq_core.errors import RunDirError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.compare import compare_runs
from lgvq_core.testing.fixtures import write_run_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compare.toml"


def fake_run(root: Path, name: str, alignment: list[str], results: dict, rec_loss: float, seed: int = 0) -> Path:
    run_dir = root / name / "20260101-000000-abcdef"
    (run_dir / "eval").mkdir(parents=True)
    tables = "".join(f'\n[[alignment]]\ntype = "{a}"\nweight = 0.1\n' for a in alignment)
    (run_dir / "resolved.toml").write_text(f'[run]\nname = "{name}"\nseed = {seed}\n{tables}')
    records = [
        {"step": 1, "split": "train", "loss": 1.0},
        {"step": 2, "split": "val", "rec_loss": rec_loss + 1},
        {"step": 4, "split": "val", "rec_loss": rec_loss},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for task, metrics in results.items():
        (run_dir / "eval" / f"{task}.json").write_text(json.dumps({"task": task, "step": 4, "metrics": metrics}))
    return run_dir


def masked(recall: float) -> dict:
    entry = {"captions": 8, "tokens": 8, "recall@1": recall, "shuffled_recall@1": recall / 2}
    return {
        "matcher": "model",
        "leak-free": {"mask-1": entry},
        "official": {"mask-1": dict(entry, **{"recall@1": 0.9})},
    }


def test_single_runs_are_tabled_side_by_side_and_none_is_called_better(tmp_path):
    lg = fake_run(
        tmp_path,
        "lg",
        ["semantic-nce", "masked-text", "relation"],
        {
            "reconstruction": {"psnr": 21.5, "fid": 40.0, "usage": 0.5},
            "masked-words": masked(0.25),
            "relation": {"mse": 0.04, "matcher": "model"},
        },
        rec_loss=0.1,
    )
    base = fake_run(
        tmp_path,
        "base",
        [],
        {"reconstruction": {"psnr": 20.0, "fid": 45.0, "usage": 0.5}, "relation": {"mse": 0.6, "matcher": "probe"}},
        rec_loss=0.2,
    )
    markdown, data = compare_runs([lg, base], ["LG-VQ", "baseline"], tmp_path / "out")

    lines = markdown.split("\n\n")[0].splitlines()
    assert lines[0] == "| metric | LG-VQ | baseline | LG-VQ − baseline |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    # one seed per arm: a difference, but no interval and so no bold
    assert rows["PSNR ↑"] == "| PSNR ↑ | 21.5 | 20 | +1.5 (one seed) |"
    assert rows["rFID ↓"] == "| rFID ↓ | 40 | 45 | -5 (one seed) |"
    assert rows["codebook usage ↑"] == "| codebook usage ↑ | 0.5 | 0.5 | 0 (equal) |"
    assert rows["val rec_loss (last) ↓"] == "| val rec_loss (last) ↓ | 0.1 | 0.2 | -0.1 (one seed) |"
    assert rows["alignment losses"] == "| alignment losses | semantic-nce, masked-text, relation | none |  |"
    assert rows["masked words Mask-1 R@1, leak-free ↑"].endswith("| 0.25 | n/a | n/a |")  # one arm has it
    assert rows["relation matcher"] == "| relation matcher | model | probe |  |"
    assert "retrieval R@1 ↑" not in rows  # no run has it
    assert "**" not in markdown and "One seed" in markdown
    # leak-free comes before the leaky official number
    assert lines.index(rows["masked words Mask-1 R@1, leak-free ↑"]) < lines.index(
        rows["masked words Mask-1 R@1, official (leaky) ↑"]
    )

    assert (tmp_path / "out" / "compare.md").read_text() == markdown
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved == json.loads(json.dumps(data))
    psnr = next(r for r in saved["rows"] if r["metric"] == "PSNR")
    assert psnr["values"] == {"LG-VQ": [21.5], "baseline": [20.0]} and psnr["better"] == "higher"
    assert saved["runs"][0]["eval"]["relation"]["mse"] == 0.04
    assert saved["runs"][1]["run"]["step"] == 4


def test_runs_sharing_a_name_are_one_arms_seeds(tmp_path):
    first = fake_run(tmp_path / "a", "same", [], {"reconstruction": {"psnr": 1.0}}, 0.1)
    second = fake_run(tmp_path / "b", "same", [], {"reconstruction": {"psnr": 2.0}}, 0.1, seed=1)
    _, data = compare_runs([first, second])
    assert data["arms"] == ["same"] and data["seeds"] == [0, 1]
    psnr = next(r for r in data["rows"] if r["metric"] == "PSNR")
    assert psnr["values"] == {"same": [1.0, 2.0]} and psnr["mean"]["same"] == 1.5


def test_two_runs_of_one_arm_and_seed_need_labels(tmp_path):
    first = fake_run(tmp_path / "a", "same", [], {"reconstruction": {"psnr": 1.0}}, 0.1)
    second = fake_run(tmp_path / "b", "same", [], {"reconstruction": {"psnr": 2.0}}, 0.1)
    with pytest.raises(RunDirError, match="--labels"):
        compare_runs([first, second])
    _, data = compare_runs([first, second], ["one", "two"])
    assert data["arms"] == ["one", "two"]


def test_a_cut_last_metrics_line_does_not_stop_the_table(tmp_path):
    run_dir = fake_run(tmp_path, "cut", [], {"reconstruction": {"psnr": 1.0}}, 0.1)
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 5, "split": "va')
    _, data = compare_runs([run_dir])
    assert data["runs"][0]["run"]["val_rec_loss"] == 0.1


def test_a_run_without_eval_results_says_to_run_lgvq_eval(tmp_path):
    run_dir = fake_run(tmp_path, "fresh", [], {}, 0.1)
    with pytest.raises(RunDirError, match="lgvq eval"):
        compare_runs([run_dir])


def test_the_example_and_its_baseline_are_valid_run_files_with_every_task():
    lg = load_run_file(EXAMPLE).config
    baseline = load_run_file(EXAMPLE, overrides=["alignment=[]", "run.name=compare-baseline"]).config
    tasks = ["reconstruction", "code-probe", "retrieval", "masked-words", "relation", "codebook"]
    assert [t.type for t in lg.tasks] == tasks
    assert [a.type for a in lg.alignment] == ["semantic-nce", "masked-text", "relation"]
    assert lg.text_encoder.type == "minilm" and lg.data.type == "shapes"
    assert baseline.alignment == [] and baseline.text_encoder.type == "minilm"
    assert baseline.tasks == lg.tasks


@pytest.mark.slow
def test_lgvq_compare_trains_two_seeds_of_both_arms_and_tables_their_real_results(tiny_run_config, tmp_path, lgvq_cli):
    tiny_run_config["tasks"] = [{"type": "reconstruction", "metrics": ["psnr", "usage"]}]
    tiny_run_config["compare"] = {"seeds": [0, 1]}
    path = write_run_file(tiny_run_config, tmp_path / "tiny-compare.toml")
    out = tmp_path / "cmp"

    result = lgvq_cli("compare", str(path), "--out", str(out))
    assert result.code == 0, result.err
    assert "[4/4] baseline, seed 1: done in" in result.out
    data = json.loads((out / "compare.json").read_text())
    assert data["arms"] == ["LG-VQ", "baseline"] and data["seeds"] == [0, 1]
    psnr = next(r for r in data["rows"] if r["metric"] == "PSNR")
    for run in data["runs"]:  # every per-seed value is that run's own evaluation
        saved = json.loads((Path(run["run_dir"]) / "eval" / "reconstruction.json").read_text())
        assert psnr["values"][run["arm"]][run["seed"]] == saved["metrics"]["psnr"]
        assert run["run"]["alignment"] == (
            [] if run["arm"] == "baseline" else ["semantic-nce", "masked-text", "relation"]
        )
    assert psnr["mean"]["LG-VQ"] == pytest.approx(sum(psnr["values"]["LG-VQ"]) / 2)
    assert psnr["values"]["LG-VQ"][0] != psnr["values"]["LG-VQ"][1]  # the seeds differ
    assert len({r["run_dir"] for r in data["runs"]}) == 4
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))  # one per curve: each seed and the mean
    assert {"train-loss.png", "train-rec_loss.png", "val-rec_loss.png", "val-psnr.png"} <= set(figures)
    assert f"wrote {len(figures)} figure(s) of the curves" in result.out
    assert "of CPU time)" in data["context"]["Time"]  # each run's CPU time beside the wall-clock time

    again = lgvq_cli("compare", str(path), "--out", str(out))
    assert again.code == 0 and again.out.count("finished earlier, kept") == 4 and ": training (" not in again.out


# ------------------------------------------------------------------------------------------
# the rows come from the tasks' own specs
# ------------------------------------------------------------------------------------------
def test_the_curated_rows_are_those_the_task_specs_declare_in_their_order():
    from lgvq_core.runner.compare import RUN_ROWS, curated_rows

    rows = curated_rows()
    assert rows[: len(RUN_ROWS)] == RUN_ROWS
    tasks = list(dict.fromkeys(row.task for row in rows[len(RUN_ROWS) :]))
    assert tasks == ["reconstruction", "retrieval", "masked-words", "relation", "codebook"]
    psnr = next(row for row in rows if row.metric == "PSNR")
    assert (psnr.task, psnr.key, psnr.better) == ("reconstruction", ("psnr",), "higher")


def test_a_third_party_task_places_its_own_labelled_rows():
    from lgvq_core.registry import get_registry
    from lgvq_core.runner.compare import curated_rows, table_rows
    from lgvq_core.specs import ComparisonRow, RegisteredComponent, TaskSpec

    registry = get_registry()
    spec = TaskSpec(
        name="sharpness",
        summary="x",
        config_cls=registry.get_spec("task", "codebook").config_cls,
        factory="acme_tasks:build",
        comparison_rows=(ComparisonRow("edge sharpness", ("edges", "mean"), "higher"),),
        comparison_order=15,
    )
    registry._components["task"]["sharpness"] = RegisteredComponent("task", spec, "acme", "acme-lgvq", "1.0")
    try:
        labels = [row.metric for row in curated_rows()]
        assert labels.index("perplexity") < labels.index("edge sharpness") < labels.index("retrieval R@1")
        info = {"run": {}, "eval": {"sharpness": {"edges": {"mean": 0.5, "max": 0.9}}}}
        rows = table_rows([info])
        assert [(r.metric, r.better) for r in rows] == [("edge sharpness", "higher")]  # max: not declared, not shown
    finally:
        del registry._components["task"]["sharpness"]


def test_a_comparison_row_refuses_a_direction_it_does_not_know():
    from lgvq_core.specs import ComparisonRow

    with pytest.raises(ValueError, match='better must be "higher", "lower" or None'):
        ComparisonRow("x", ("x",), "up")


def test_core_names_no_task_of_lgvq_tasks_in_the_comparison():
    import lgvq_core.runner.compare as compare_module
    from lgvq_tasks.registration import TASKS

    source = Path(compare_module.__file__).read_text()
    named = [spec.name for spec in TASKS if f'"{spec.name}"' in source]
    assert named == []
