"""compare_runs: evaluated runs side by side, the better value of each ranked row in bold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lgvq_core.errors import RunDirError
from lgvq_core.registry import load_run_file
from lgvq_core.runner.compare import compare_runs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compare.toml"


def fake_run(root: Path, name: str, alignment: list[str], results: dict, rec_loss: float) -> Path:
    run_dir = root / name / "20260101-000000-abcdef"
    (run_dir / "eval").mkdir(parents=True)
    tables = "".join(f'\n[[alignment]]\ntype = "{a}"\nweight = 0.1\n' for a in alignment)
    (run_dir / "resolved.toml").write_text(f'[run]\nname = "{name}"\n{tables}')
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


def test_table_has_a_column_per_run_and_bolds_the_better_value(tmp_path):
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

    lines = markdown.splitlines()
    assert lines[0] == "| metric | LG-VQ | baseline |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert rows["PSNR ↑"] == "| PSNR ↑ | **21.5** | 20 |"
    assert rows["rFID ↓"] == "| rFID ↓ | **40** | 45 |"
    assert rows["codebook usage ↑"] == "| codebook usage ↑ | 0.5 | 0.5 |"  # a tie is not bold
    assert rows["relation MSE ↓"] == "| relation MSE ↓ | **0.04** | 0.6 |"
    assert rows["val rec_loss (last) ↓"] == "| val rec_loss (last) ↓ | **0.1** | 0.2 |"
    assert rows["alignment losses"] == "| alignment losses | semantic-nce, masked-text, relation | none |"
    assert rows["masked words Mask-1 R@1, leak-free ↑"].endswith("| 0.25 | n/a |")  # one number: nothing to rank
    assert rows["relation matcher"] == "| relation matcher | model | probe |"
    assert "retrieval R@1 ↑" not in rows  # no run has it
    # leak-free comes before the leaky official number
    assert lines.index(rows["masked words Mask-1 R@1, leak-free ↑"]) < lines.index(
        rows["masked words Mask-1 R@1, official (leaky) ↑"]
    )

    assert (tmp_path / "out" / "compare.md").read_text() == markdown
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved == json.loads(json.dumps(data))
    psnr = next(r for r in saved["rows"] if r["metric"] == "PSNR")
    assert psnr["values"] == [21.5, 20.0] and psnr["better"] == "higher"
    assert saved["runs"][0]["eval"]["relation"]["mse"] == 0.04
    assert saved["runs"][1]["run"]["step"] == 4


def test_default_labels_are_run_names_made_unique_by_directory(tmp_path):
    first = fake_run(tmp_path / "a", "same", [], {"reconstruction": {"psnr": 1.0}}, 0.1)
    second = fake_run(tmp_path / "b", "same", [], {"reconstruction": {"psnr": 2.0}}, 0.1)
    _, data = compare_runs([first, second])
    assert data["columns"] == [f"same ({first.name})", f"same ({second.name})"]


def test_a_run_without_eval_results_says_to_run_lgvq_eval(tmp_path):
    run_dir = fake_run(tmp_path, "fresh", [], {}, 0.1)
    with pytest.raises(RunDirError, match="lgvq eval"):
        compare_runs([run_dir])


def test_the_example_and_its_baseline_are_valid_run_files_with_every_task():
    lg = load_run_file(EXAMPLE).config
    baseline = load_run_file(EXAMPLE, overrides=["alignment=[]", "run.name=compare-baseline"]).config
    tasks = ["reconstruction", "retrieval", "masked-words", "relation", "codebook"]
    assert [t.type for t in lg.tasks] == tasks
    assert [a.type for a in lg.alignment] == ["semantic-nce", "masked-text", "relation"]
    assert lg.text_encoder.type == "minilm" and lg.data.type == "shapes"
    assert baseline.alignment == [] and baseline.text_encoder.type == "minilm"
    assert baseline.tasks == lg.tasks
