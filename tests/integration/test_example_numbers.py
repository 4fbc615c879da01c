"""The numbers the README and docs quote about the examples are rendered from records of real runs
(bench/example_numbers.py): a marked block that differs from its record fails here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("example_numbers", ROOT / "bench" / "example_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_marked_block_is_what_its_record_renders():
    script = load_script()
    blocks = [m.group("name") for doc in script.DOCUMENTS for m in script.BLOCK.finditer(doc.read_text())]
    assert {"quickstart", "downstream"} <= set(blocks)
    assert script.render_documents(write=False) == [], "run: python bench/example_numbers.py --render"
    for name in set(blocks):
        record = json.loads((script.RECORDS / f"{name}.json").read_text())
        assert record["machine"]["cpu_model"] not in ("", "unknown")
        times = record["times"] if "wall_s" in record["times"] else next(iter(record["times"].values()))
        assert times["wall_s"] > 0 and times["cpu_s"] > 0  # wall-clock and CPU time, both
        assert not record.get("overrides"), "a record of a run with --set overrides is not the example as documented"


def test_a_timed_command_reports_wall_and_cpu_time_and_its_run_directory(tmp_path):
    script = load_script()
    busy = (
        "import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('run directory: /x/y')"
    )
    output, times = script.timed([sys.executable, "-c", busy], tmp_path)
    assert times["cpu_s"] >= 0.25 and times["wall_s"] >= times["cpu_s"] - 0.05
    assert script.run_directory(output) == Path("/x/y")
    with pytest.raises(SystemExit, match="failed with exit 3"):
        script.timed([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)


def test_a_run_is_summarised_from_its_metrics_and_eval_files(tmp_path):
    script = load_script()
    run_dir = tmp_path / "run"
    (run_dir / "eval").mkdir(parents=True)
    lines = [
        {"step": 10, "split": "train", "loss": 1.0, "elapsed_s": 5.0, "images_seen": 320},
        {"step": 10, "split": "val", "psnr": 21.5, "codebook_usage": 0.5},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run_dir / "eval" / "retrieval.json").write_text(json.dumps({"task": "retrieval", "metrics": {"r@1": 0.25}}))
    summary = script.summarise_run(run_dir)
    assert summary["steps"] == 10 and summary["training_s"] == 5.0
    assert summary["validation"] == {"psnr": 21.5, "codebook_usage": 0.5}
    assert summary["results"] == {"retrieval": {"r@1": 0.25}}


def test_the_quickstart_sentence_by_hand():
    script = load_script()
    record = {
        "machine": {"cpu_model": "Some CPU", "cores": 2, "load_average": [0.5, 0.4, 0.3]},
        "commit": "abc1234",
        "times": {"wall_s": 278.4, "cpu_s": 465.0},
        "run": {
            "steps": 3000,
            "training_s": 200.2,
            "validation": {"psnr": 27.94, "codebook_usage": 1.0},
            "results": {
                "retrieval": {"r@1": 0.2612},
                "masked-words": {"leak-free": {"mask-1": {"recall@1": 0.8, "shuffled_recall@1": 0.55}}},
            },
        },
    }
    assert script.render_quickstart(record) == (
        "The measured quickstart took 4 min 38 s wall-clock and 7 min 45 s of CPU time (Some CPU, 2 cores, "
        "load 0.5 when it started; lgvq abc1234; 3,000 steps, 200 s of them training). It ended at validation "
        "PSNR 27.9 dB with 100% of the codes in use; retrieval R@1 0.26; leak-free masked-word R@1 0.80 (0.55 "
        "with the images shuffled).\n"
    )


def test_a_block_without_a_record_says_how_to_make_it(tmp_path):
    script = load_script()
    document = tmp_path / "doc.md"
    document.write_text("text\n<!-- example-numbers:quickstart -->\nold\n<!-- /example-numbers -->\n")
    with pytest.raises(SystemExit, match="run bench/example_numbers.py quickstart"):
        script.render_documents(tmp_path / "no-records", (document,))
