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
    assert {"quickstart", "downstream", "levers", "compare", "grounding"} <= set(blocks)
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


def test_durations_are_read_as_lgvq_compare_writes_them():
    script = load_script()
    assert script._seconds("95 min 3 s") == 5703.0 and script._seconds("42 s") == 42.0
    with pytest.raises(ValueError, match="not a duration"):
        script._seconds("about an hour")


def _comparison_folder(tmp_path, cpu_seconds=(100.0, 120.5)):
    folder = tmp_path / "compare-comparison"
    folder.mkdir()
    rows = [
        {
            "metric": "PSNR",
            "task": "reconstruction",
            "key": ["psnr"],
            "better": "higher",
            "numeric": True,
            "values": {"baseline": [27.0, 27.2], "LG": [26.0, 26.4]},
            "mean": {"baseline": 27.1, "LG": 26.2},
            "std": {"baseline": 0.1414, "LG": 0.2828},
            "differences": [
                {
                    "a": "LG",
                    "b": "baseline",
                    "mean": -0.9,
                    "low": -3.44,
                    "high": 1.64,
                    "n": 2,
                    "verdict": "within noise",
                }
            ],
            "winner": None,
        }
    ]
    table = {
        "arms": ["baseline", "LG"],
        "reference": "baseline",
        "seeds": [0, 1],
        "rule": "Seeds 0, 1.",
        "rows": rows,
        "runs": [{"a": "per-run details the record leaves out"}],
        "context": {
            "Command": "`lgvq compare examples/compare.toml --set run.output_dir=/tmp/x --jobs 2`",
            "Machine": "Some CPU, 2 cores, 1 torch thread(s) per run, 2 run(s) at a time",
            "Time": "2 runs took 3 min 40 s of training and evaluation in total; this invocation 2 min 5 s",
        },
    }
    (folder / "compare.json").write_text(json.dumps(table))
    runs = {
        f"arm/seed-{i}": {"seconds": 110.0, **({"cpu_seconds": c} if c is not None else {})}
        for i, c in enumerate(cpu_seconds)
    }
    (folder / "compare-state.json").write_text(json.dumps({"version": 1, "runs": runs, "started": {}}))
    return folder


def test_a_finished_comparison_becomes_a_record_with_its_times_and_every_row(tmp_path):
    script = load_script()
    record = script.comparison_record(_comparison_folder(tmp_path))
    assert record["times"] == {"wall_s": 125.0, "cpu_s": 220.5, "runs_wall_s": 220.0, "runs": 2}
    assert record["overrides"] == [] and record["place_overrides"] == ["run.output_dir=/tmp/x"]
    assert record["commands"] == ["lgvq compare examples/compare.toml --set run.output_dir=/tmp/x --jobs 2"]
    assert [row["metric"] for row in record["comparison"]["rows"]] == ["PSNR"]
    assert "runs" not in record["comparison"] and "task" not in record["comparison"]["rows"][0]
    record.update(commit="abc1234", machine={"cpu_model": "Some CPU"})
    assert script.render_compare_time(record) == (
        "Machine: Some CPU, 2 cores, 1 torch thread(s) per run, 2 run(s) at a time. Time: 2 min 05 s wall-clock for "
        "the command; its 2 runs took 3 min 40 s of wall-clock and 3 min 40 s of CPU time together (lgvq abc1234; "
        "`lgvq compare examples/compare.toml --set run.output_dir=/tmp/x --jobs 2`).\n"
    )
    # the table is lgvq compare's own markdown for the rows asked for
    table = script._comparison_table(record["comparison"], record["comparison"]["rows"])
    assert table.splitlines()[0] == "| metric | baseline | LG | LG − baseline |"
    assert table.splitlines()[2] == "| PSNR ↑ | 27.1 ± 0.14 | 26.2 ± 0.28 | -0.9 [-3.44, +1.64], within noise |"
    full = script.render_compare_full(record)
    assert "Seeds 0, 1." in full and "- Time: 2 min 05 s wall-clock for the command" in full


def test_a_comparison_without_cpu_time_or_files_is_refused(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit, match="CPU time is not recorded for every run"):
        script.comparison_record(_comparison_folder(tmp_path, cpu_seconds=(100.0, None)))
    with pytest.raises(SystemExit, match="compare.json is missing"):
        script.comparison_record(tmp_path / "nowhere")


def test_the_bars_and_vqa_types_by_hand():
    script = load_script()
    means = {
        "code-probe: linear_mean": 0.77,
        "code-probe: shuffled_mean": 0.55,
        "code-probe: majority_mean": 0.63,
        "captioning: caption-scores: cider_d": 1.2,
        "captioning: caption-scores: shuffled_images.cider_d": 0.5,
        "captioning: caption-scores: most_frequent_caption.cider_d": 0.19,
        "vqa: vqa-scores: accuracy": 0.5,
        "vqa: vqa-scores: shuffled_images.accuracy": 0.3,
        "vqa: vqa-scores: question_only.accuracy": 0.31,
        "vqa: vqa-scores: answer_prior.accuracy": 0.29,
        "unconditional: generation-fid: fid": 185.3,
        "unconditional: generation-fid: floor.fid": 46.6,
        "unconditional: generation-fid: ceiling.fid": 424.0,
    }
    for kind, value in (("object", 0.2), ("number", 0.8), ("color", 0.6), ("location", 0.25)):
        for prefix, shift in (
            ("", 0.0),
            ("shuffled_images.", -0.1),
            ("question_only.", -0.05),
            ("answer_prior.", -0.15),
        ):
            means[f"vqa: vqa-scores: {prefix}per_type.{kind}.accuracy"] = value + shift
    record = {"comparison": {"rows": [{"metric": m, "mean": {"baseline": v}} for m, v in means.items()]}}
    bars = script.render_compare_bars(record).splitlines()
    assert (
        bars[2]
        == "| code probe (linear, 16 attributes) | 0.770 | shuffled labels 0.550, majority answer 0.630 | above both | yes |"
    )
    assert bars[3] == (
        "| captioning, CIDEr-D | 1.20 | shuffled images 0.50, most frequent caption 0.19 | ≥ 2 × shuffled | yes (2.4×) |"
    )
    assert bars[4] == (
        "| VQA, accuracy | 0.500 | shuffled images 0.300, question-only 0.310, answer prior 0.290 | shuffled + 0.25 "
        "| no (+0.20) |"
    )
    assert bars[5].startswith(
        "| unconditional prior, FID (256 vs 256) | 185 | floor 47 (validation halves), ceiling 424"
    )
    assert bars[5].endswith("| no |")
    types = script.render_compare_vqa_types(record).splitlines()
    assert types[2] == "| object | 0.200 | 0.100 | 0.150 | 0.050 |"
    assert types[5] == "| location | 0.250 | 0.150 | 0.200 | 0.100 |"
    with pytest.raises(SystemExit, match="no row 'PSNR'"):
        script._row(record["comparison"], "PSNR")


def test_the_lever_table_by_hand():
    script = load_script()
    record = {
        "machine": {"cpu_model": "Some CPU", "cores": 2, "load_average": [0.1, 0.1, 0.1]},
        "commit": "abc1234",
        "commands": ["python bench/recipe_levers.py --out DIR --steps 3000 --threads 2"],
        "times": {"wall_s": 300.0, "cpu_s": 590.0},
        "steps": 3000,
        "rows": [
            {
                "lever": "plain",
                "psnr": 28.251,
                "usage": 0.2109,
                "perplexity": 31.06,
                "seconds": 151.2,
                "cpu_seconds": 290.0,
            },
            {
                "lever": "+ restarts",
                "psnr": 29.72,
                "usage": 0.996,
                "perplexity": 151.3,
                "seconds": 148.8,
                "cpu_seconds": 300.0,
            },
        ],
    }
    assert script.render_levers(record).splitlines() == [
        "| lever (3,000 steps each) | val PSNR (dB) | codebook usage | perplexity | wall time | CPU time |",
        "|---|---:|---:|---:|---:|---:|",
        "| plain | 28.25 | 0.211 | 31.1 | 151 s | 290 s |",
        "| + restarts | 29.72 | 0.996 | 151.3 | 149 s | 300 s |",
        "",
        "Measured on Some CPU, 2 cores, load 0.1 when it started (lgvq abc1234, `python bench/recipe_levers.py --out "
        "DIR --steps 3000 --threads 2`): 5 min 00 s wall-clock and 9 min 50 s of CPU time for the 2 runs.",
    ]


def test_a_block_of_an_unknown_part_is_refused(tmp_path):
    script = load_script()
    document = tmp_path / "doc.md"
    document.write_text("<!-- example-numbers:compare:nothing -->\nold\n<!-- /example-numbers -->\n")
    with pytest.raises(SystemExit, match="'compare:nothing' is not one of"):
        script.render_documents(tmp_path, (document,))


def test_the_grounding_sentence_and_its_tokenizer_from_the_recorded_comparison(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit, match="record the comparison first"):
        script.comparison_run_dir(tmp_path)
    folder = _comparison_folder(tmp_path)
    run_dir = tmp_path / "seed-0" / "baseline-run"
    run_dir.mkdir(parents=True)
    state = json.loads((folder / "compare-state.json").read_text())
    state["runs"]["baseline/seed-0"] = {"run_dir": str(run_dir), "seconds": 1.0, "cpu_seconds": 1.0}
    (folder / "compare-state.json").write_text(json.dumps(state))
    (tmp_path / "compare.json").write_text(json.dumps(script.comparison_record(folder)))
    assert script.comparison_run_dir(tmp_path) == run_dir
    with pytest.raises(SystemExit, match="no finished run of LG, seed 3"):
        script.comparison_run_dir(tmp_path, "LG", 3)
    record = {
        "machine": {"cpu_model": "Some CPU", "cores": 2, "load_average": [0.2, 0.1, 0.1]},
        "commit": "abc1234",
        "times": {"wall_s": 270.0, "cpu_s": 520.0},
        "run": {
            "steps": 1500,
            "results": {
                "grounding-scores": {
                    "acc@0.5": 0.6914,
                    "mean_iou": 0.5305,
                    "expressions": 2447,
                    "shuffled_images": {"acc@0.5": 0.0985},
                    "constant_box": {"acc@0.5": 0.011},
                }
            },
        },
    }
    assert script.render_grounding(record) == (
        "Trained once on the seed-0 baseline codes of the comparison above with `examples/compare/grounding.toml` "
        "(1,500 steps of batch 64; 4 min 30 s wall-clock, 8 min 40 s of CPU time on Some CPU, 2 cores, load 0.2 "
        "when it started; lgvq abc1234), grounding places the box of 69% of the 2,447 validation expressions at "
        "IoU ≥ 0.5 (mean IoU 0.53), against 10% with the images shuffled and 1% for the mean training box: the "
        "bar of Acc@0.5 ≥ 0.5 is reached.\n"
    )


def test_the_quickstart_probe_sentence_by_hand():
    script = load_script()

    def probe(linear, majority):
        return {"linear": linear, "majority": majority}

    attributes = {
        "count": probe(0.824, 0.359),
        "largest_position": probe(0.742, 0.176),
        "background": probe(1.0, 0.383),
    }
    attributes |= {f"has_{k}": probe(0.65 + 0.02 * i, 0.63) for i, k in enumerate(("circle", "square", "triangle"))}
    attributes |= {"has_diamond": probe(0.66, 0.64), "has_star": probe(0.7, 0.65)}
    attributes |= {"has_red": probe(0.9, 0.75), "has_green": probe(1.0, 0.7)}
    record = {"run": {"results": {"code-probe": {"attributes": attributes}}}}
    assert script.render_quickstart_probe(record) == (
        "The code probe of the measured quickstart run says the same in numbers: a linear probe on the frozen code "
        "vectors reads the background (1.00, majority answer 0.38), colours (0.90–1.00, majority 0.70–0.75), the "
        "number of shapes (0.82, majority 0.36) and the largest shape's position (0.74, majority 0.18), and a "
        "shape's kind at 0.65–0.70 where the majority answer scores 0.63–0.65.\n"
    )


def test_the_lever_summary_by_hand_and_a_record_missing_a_variant():
    script = load_script()

    def row(variant, psnr, usage, seconds=100.0, cpu=190.0):
        return {"variant": variant, "psnr": psnr, "usage": usage, "seconds": seconds, "cpu_seconds": cpu}

    rows = [
        row("plain", 28.25, 0.2109, 200.0, 390.0),
        row("kmeans", 27.77, 0.2461),
        row("restarts", 29.72, 0.9961),
        row("factorised", 28.34, 0.2422),
        row("ema", 29.02, 0.4102),
        row("betas", 28.27, 0.1914),
        row("batch-64", 26.68, 0.2539),
        row("bf16", 27.51, 0.2461, 151.0, 290.0),
        row("recipe", 29.54, 1.0),
        row("recipe+lg", 27.94, 1.0),
    ]
    text = script.render_levers_summary({"rows": rows})
    assert "usage from 21.1% to 99.6% of the 256 codes and PSNR from 28.2 to 29.7 dB" in text
    assert "EMA updates help less\n(41.0%); k-means initialisation (24.6%)" in text
    assert "do not fix collapse either (19–25 % of the codes)" in text
    assert "151 s wall-clock and 290 s of CPU time for the run in bf16 against 200 s and 390 s in fp32" in text
    assert text.endswith("LG reaches 29.5 dB with 100% of the codes in use; with its LG losses 27.9 dB and 100%.\n")
    with pytest.raises(SystemExit, match="lacks the variant"):
        script.render_levers_summary({"rows": rows[:3]})
