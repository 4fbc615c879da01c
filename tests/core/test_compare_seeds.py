"""``lgvq compare`` over seeds: mean ± spread, paired 95 % intervals, resume, parallel jobs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lgvq_core.errors import ConfigError, RunDirError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.compare import compare_arms, read_metric_lines, run_info
from lgvq_core.runner.compare_seeds import ComparisonInterrupted, choose_seeds, run_comparison
from lgvq_core.runner.compare_stats import paired_difference, spread, t_quantile
from lgvq_core.testing.comparison import PresetRunner
from lgvq_core.testing.fixtures import write_run_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compare.toml"


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------
def test_t_quantiles_match_the_printed_tables():
    # two-sided 95 %: 12.706 (1 dof), 4.303 (2), 2.776 (4), 2.228 (10), 1.984 (100)
    for dof, expected in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (100, 1.984)):
        assert t_quantile(dof) == pytest.approx(expected, abs=5e-4)


def test_paired_difference_on_hand_computed_numbers():
    # d = [1, 1.5, 1.5]: mean 4/3, sd sqrt(1/12), half width 4.3027 * sd / sqrt(3)
    difference = paired_difference([1.0, 2.0, 3.0], [0.0, 0.5, 1.5])
    half = 4.302653 * math.sqrt(1 / 12) / math.sqrt(3)
    assert difference.mean == pytest.approx(4 / 3)
    assert difference.low == pytest.approx(4 / 3 - half, abs=1e-5)
    assert difference.high == pytest.approx(4 / 3 + half, abs=1e-5)
    assert difference.holds and difference.verdict == "holds"

    noisy = paired_difference([1.0, 2.0], [0.0, 2.5])  # d = [1, -0.5]
    assert not noisy.holds and noisy.verdict == "within noise"
    assert paired_difference([1.0], [0.0]).verdict == "one seed: no interval"
    assert paired_difference([3.0, 4.0], [3.0, 4.0]).verdict == "equal"


def test_spread_is_the_sample_standard_deviation():
    summary = spread([1.0, 2.0, 4.0])
    assert summary.mean == pytest.approx(7 / 3)
    assert summary.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert spread([5.0]).std is None


# ------------------------------------------------------------------------------------------
# the table, on known per-seed numbers
# ------------------------------------------------------------------------------------------
#: Two arms x seeds 0 and 1. PSNR: LG - baseline = [1.0, 0.2] -> mean 0.6, sd 0.566,
#: interval 0.6 ± 12.706 x 0.4 = [-4.48, 5.68]: within noise. rFID: LG - baseline =
#: [-10, -10.2] -> mean -10.1, sd 0.1414, interval -10.1 ± 1.271: holds, LG-VQ (lower) is bold.
KNOWN = {
    "LG-VQ": {
        0: {"run": {"rec_loss": 0.10}, "reconstruction": {"psnr": 21.0, "fid": 40.0, "usage": 0.5}},
        1: {"run": {"rec_loss": 0.30}, "reconstruction": {"psnr": 22.0, "fid": 41.0, "usage": 0.5}},
    },
    "baseline": {
        0: {"run": {"rec_loss": 0.25}, "reconstruction": {"psnr": 20.0, "fid": 50.0, "usage": 0.5}},
        1: {"run": {"rec_loss": 0.25}, "reconstruction": {"psnr": 21.8, "fid": 51.2, "usage": 0.5}},
    },
}


def known_arms(tmp_path: Path, results=KNOWN) -> dict:
    runner = PresetRunner(results, str(tmp_path / "calls.jsonl"))
    from lgvq_core.runner.compare_seeds import RunSpec

    arms = {}
    for arm, seeds in results.items():
        for seed in seeds:
            overrides = (f"run.name=x-{arm.lower()}", f"run.seed={seed}")
            outcome = runner(RunSpec(arm, seed, "x.toml", overrides, str(tmp_path / f"seed-{seed}")))
            arms.setdefault(arm, {})[seed] = run_info(outcome.run_dir)
    return arms


def table_rows(markdown: str) -> dict[str, str]:
    lines = markdown.split("\n\n")[0].splitlines()
    return {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}


def test_two_seed_table_shows_mean_spread_and_bolds_only_what_holds(tmp_path):
    markdown, data = compare_arms(known_arms(tmp_path), tmp_path / "out")

    assert markdown.splitlines()[0] == "| metric | LG-VQ | baseline | LG-VQ − baseline |"
    rows = table_rows(markdown)
    # PSNR: means 21.5 / 20.9, sds 0.71 / 1.3; the difference is within noise: nothing bold
    assert rows["PSNR ↑"] == "| PSNR ↑ | 21.5 ± 0.71 | 20.9 ± 1.3 | +0.6 [-4.48, +5.68], within noise |"
    # rFID: the paired difference holds although the spreads overlap the gap's scale: LG-VQ bold
    assert rows["rFID ↓"] == "| rFID ↓ | **40.5 ± 0.71** | 50.6 ± 0.85 | -10.1 [-11.4, -8.83] |"
    assert rows["codebook usage ↑"] == "| codebook usage ↑ | 0.5 | 0.5 | 0 (equal) |"
    assert rows["val rec_loss (last) ↓"].endswith("| 0.2 ± 0.14 | 0.25 | -0.05 [-1.32, +1.22], within noise |")
    assert "n = 2" in markdown and "excludes 0" in markdown and "within noise" in markdown.split("\n\n")[1]

    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["arms"] == ["LG-VQ", "baseline"]
    fid = next(r for r in saved["rows"] if r["metric"] == "rFID")
    assert fid["values"] == {"LG-VQ": [40.0, 41.0], "baseline": [50.0, 51.2]}  # per-seed values
    assert fid["mean"]["baseline"] == pytest.approx(50.6)
    assert fid["std"]["LG-VQ"] == pytest.approx(math.sqrt(0.5))
    assert fid["winner"] == "LG-VQ"
    (difference,) = fid["differences"]
    assert difference["mean"] == pytest.approx(-10.1)
    assert difference["high"] == pytest.approx(-10.1 + 12.7062 * math.sqrt(0.02) / math.sqrt(2), abs=1e-4)
    psnr = next(r for r in saved["rows"] if r["metric"] == "PSNR")
    assert psnr["winner"] is None and psnr["differences"][0]["verdict"] == "within noise"
    assert {run["arm"] for run in saved["runs"]} == {"LG-VQ", "baseline"} and len(saved["runs"]) == 4


def test_a_new_tasks_numbers_become_rows_with_the_direction_it_declares(tmp_path):
    def language(seed_shift: float) -> dict:
        return {"captioning": {"bleu": {"4": 0.30 + seed_shift}, "samples": 8, "better": {"bleu.4": "higher"}}}

    results = {
        "LG-VQ": {0: language(0.10), 1: language(0.11)},
        "baseline": {0: language(0.0), 1: language(0.0)},
    }
    markdown, data = compare_arms(known_arms(tmp_path, results))
    rows = table_rows(markdown)
    assert rows["captioning: bleu.4 ↑"].startswith("| captioning: bleu.4 ↑ | **0.405 ± 0.0071** | 0.3 |")
    assert rows["captioning: samples"] == "| captioning: samples | 8 | 8 | 0 (equal) |"  # not declared: unranked
    assert not any("better" in metric for metric in rows)


def test_one_seed_bolds_nothing_and_says_why(tmp_path):
    single = {arm: {0: seeds[0]} for arm, seeds in KNOWN.items()}
    markdown, data = compare_arms(known_arms(tmp_path, single))
    assert "**" not in markdown.split("\n\n")[0]
    assert table_rows(markdown)["rFID ↓"] == "| rFID ↓ | 40 | 50 | -10 (one seed) |"
    assert "One seed" in data["rule"]


# ------------------------------------------------------------------------------------------
# running a comparison: seeds, resume, jobs
# ------------------------------------------------------------------------------------------
def presets(tmp_path: Path, **kwargs) -> PresetRunner:
    return PresetRunner(KNOWN, str(tmp_path / "calls.jsonl"), **kwargs)


@pytest.fixture
def seeded_file(make_plugin_manager, tiny_run_config, tmp_path) -> Path:
    """A valid run file with [compare] seeds 0 and 1 (its task never runs: the runner is preset)."""
    make_plugin_manager(["core", "testing", "tasks"])
    tiny_run_config["tasks"] = [{"type": "reconstruction"}]
    tiny_run_config["compare"] = {"seeds": [0, 1]}
    return write_run_file(tiny_run_config, tmp_path / "compare.toml")


def quiet(_: str) -> None:
    pass


def test_every_arm_is_trained_once_per_seed_and_tabled(seeded_file, tmp_path):
    runner = presets(tmp_path)
    lines: list[str] = []
    markdown, data, folder = run_comparison(seeded_file, out=tmp_path / "cmp", runner=runner, say=lines.append)
    assert [(c["arm"], c["seed"]) for c in runner.calls()] == [
        ("LG-VQ", 0),
        ("LG-VQ", 1),
        ("baseline", 0),
        ("baseline", 1),
    ]
    assert data["seeds"] == [0, 1]
    assert table_rows(markdown)["rFID ↓"].startswith("| rFID ↓ | **40.5 ± 0.71** |")
    assert (folder / "compare.md").read_text() == markdown
    # a progress line per arm and seed, and the command, machine and time under the table
    assert sum("done in" in line for line in lines) == 4 and lines[0].startswith("[1/4] LG-VQ, seed 0: training")
    assert set(data["context"]) == {"Command", "Machine", "Time"} and "cores" in data["context"]["Machine"]
    assert (
        "of training and evaluation in total (" in data["context"]["Time"] and "of CPU time)" in data["context"]["Time"]
    )
    state = json.loads((folder / "compare-state.json").read_text())
    assert sorted(state["runs"]) == ["LG-VQ/seed-0", "LG-VQ/seed-1", "baseline/seed-0", "baseline/seed-1"]
    # the baseline arm drops the alignment losses; every run gets its own seed
    spec_overrides = [c for c in lines if "baseline, seed 1: training" in c][0]
    assert "--set alignment=[]" in spec_overrides and "--set run.seed=1" in spec_overrides


def test_an_interrupted_comparison_resumes_without_retraining_finished_runs(seeded_file, tmp_path):
    out = tmp_path / "cmp"
    stopping = presets(tmp_path, stop=(("baseline", 0),))
    with pytest.raises(ComparisonInterrupted, match="run the same command again"):
        run_comparison(seeded_file, out=out, runner=stopping, say=quiet)
    assert len(stopping.calls()) == 3  # LG-VQ 0, LG-VQ 1, then baseline 0 stopped

    again = presets(tmp_path)
    run_comparison(seeded_file, out=out, runner=again, say=quiet)
    trained = [(c["arm"], c["seed"], c["resume_dir"]) for c in again.calls()[3:]]
    assert trained == [("baseline", 0, None), ("baseline", 1, None)]  # restarted, LG-VQ kept

    # a third invocation trains nothing; one more seed trains only that seed
    lines: list[str] = []
    run_comparison(seeded_file, out=out, runner=again, say=lines.append)
    assert len(again.calls()) == 5 and sum("finished earlier, kept" in line for line in lines) == 4
    _, data, _ = run_comparison(seeded_file, seed_count=3, out=out, runner=presets_with_seed_2(tmp_path), say=quiet)
    assert [(c["arm"], c["seed"]) for c in again.calls()[5:]] == [("LG-VQ", 2), ("baseline", 2)]
    assert data["seeds"] == [0, 1, 2]


def presets_with_seed_2(tmp_path: Path) -> PresetRunner:
    results = {arm: {**seeds, 2: seeds[1]} for arm, seeds in KNOWN.items()}
    return PresetRunner(results, str(tmp_path / "calls.jsonl"))


def test_resume_continues_the_unfinished_run_from_its_checkpoint(seeded_file, tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(ComparisonInterrupted):
        run_comparison(seeded_file, out=out, runner=presets(tmp_path, stop=(("LG-VQ", 1),)), say=quiet)
    runner = presets(tmp_path)
    run_comparison(seeded_file, out=out, resume=True, runner=runner, say=quiet)
    resumed = runner.calls()[2]
    assert (resumed["arm"], resumed["seed"]) == ("LG-VQ", 1)
    assert resumed["resume_dir"] is not None and Path(resumed["resume_dir"]).parent.name == "tiny-lg-vq"
    assert len(runner.calls()) == 5  # 2 before, then LG-VQ 1 (continued), baseline 0 and 1


def test_a_changed_configuration_is_trained_again(seeded_file, tmp_path):
    out = tmp_path / "cmp"
    runner = presets(tmp_path)
    run_comparison(seeded_file, out=out, runner=runner, say=quiet)
    run_comparison(seeded_file, overrides=["train.max_steps=3"], out=out, runner=runner, say=quiet)
    assert len(runner.calls()) == 8


def test_the_reason_for_training_a_recorded_run_again_is_the_true_one(seeded_file, tmp_path):
    import shutil

    out = tmp_path / "cmp"
    runner = presets(tmp_path)
    run_comparison(seeded_file, out=out, runner=runner, say=quiet)
    state = json.loads((out / "compare-state.json").read_text())
    key, entry = sorted(state["runs"].items())[0]
    shutil.rmtree(Path(entry["run_dir"]) / "eval")
    lines = []
    run_comparison(seeded_file, out=out, runner=runner, say=lines.append)
    again = [line for line in lines if "training again" in line]
    assert len(again) == 1 and "eval/ folder is gone" in again[0] and "configuration changed" not in again[0]
    lines.clear()
    run_comparison(seeded_file, overrides=["train.max_steps=3"], out=out, runner=runner, say=lines.append)
    assert sum("its configuration changed since it was trained" in line for line in lines) == 4


@pytest.mark.slow
def test_parallel_jobs_give_the_same_table(seeded_file, tmp_path):
    sequential, _, _ = run_comparison(seeded_file, out=tmp_path / "one", runner=presets(tmp_path), say=quiet)
    runner = PresetRunner(KNOWN, str(tmp_path / "parallel-calls.jsonl"))
    lines: list[str] = []
    parallel, data, folder = run_comparison(seeded_file, out=tmp_path / "two", jobs=2, runner=runner, say=lines.append)
    assert sequential.split("\n\n")[0] == parallel.split("\n\n")[0]
    assert len(runner.calls()) == 4 and sum("done in" in line for line in lines) == 4
    assert (folder / "seed-0" / "tiny-lg-vq.log").is_file()


def test_seed_choice():
    assert choose_seeds([], 7, None) == [7]
    assert choose_seeds([3, 5], 0, None) == [3, 5]
    assert choose_seeds([3, 5], 0, 1) == [3]
    assert choose_seeds([3, 5], 0, 4) == [3, 5, 6, 7]
    assert choose_seeds([], 0, 3) == [0, 1, 2]


def test_compare_table_in_a_run_file_is_validated(plugin_manager, tiny_run_config, tmp_path):
    tiny_run_config["compare"] = {"seeds": [1, 1], "arms": [{"label": "a"}, {"label": "a"}]}
    with pytest.raises(ConfigError) as error:
        load_run_file(write_run_file(tiny_run_config, tmp_path / "bad.toml"))
    text = "\n".join(error.value.problems)
    assert "$.compare.seeds" in text and "differ" in text and "$.compare.arms" in text


def test_named_arms_replace_the_default_pair(seeded_file, tmp_path):
    text = seeded_file.read_text() + '\n[[compare.arms]]\nlabel = "LG-VQ"\n\n[[compare.arms]]\nlabel = "baseline"\n'
    text += 'overrides = ["alignment=[]", "train.base_lr=0.002"]\n'
    seeded_file.write_text(text)
    lines: list[str] = []
    run_comparison(seeded_file, out=tmp_path / "cmp", runner=presets(tmp_path), say=lines.append)
    assert any("baseline, seed 0: training" in line and "train.base_lr=0.002" in line for line in lines)


def test_with_a_reference_arm_every_other_arm_is_compared_with_it(tmp_path):
    three = {**KNOWN, "LG-VQ-x10": {0: KNOWN["LG-VQ"][0], 1: KNOWN["baseline"][1]}}
    markdown, data = compare_arms(known_arms(tmp_path, three), reference="baseline")
    header = markdown.splitlines()[0]
    assert header == "| metric | LG-VQ | baseline | LG-VQ-x10 | LG-VQ − baseline | LG-VQ-x10 − baseline |"
    fid = next(r for r in data["rows"] if r["metric"] == "rFID")
    # LG-VQ - baseline = [-10, -10.2]; LG-VQ-x10 - baseline = [-10, 0]: the sign is arm - reference
    assert [(d["a"], d["b"]) for d in fid["differences"]] == [("LG-VQ", "baseline"), ("LG-VQ-x10", "baseline")]
    assert [d["mean"] for d in fid["differences"]] == pytest.approx([-10.1, -5.0])
    assert "each arm − baseline" in data["rule"] and "The last columns are" in data["rule"]


def test_a_reference_that_is_no_arm_is_refused_naming_the_key(seeded_file):
    with pytest.raises(
        ConfigError, match=r"\$\.compare\.reference: 'nobody' is not an arm; the arms are LG-VQ, baseline"
    ):
        load_run_file(seeded_file, overrides=["compare.reference=nobody"])


def test_an_arm_without_downstream_trains_no_downstream_model_and_reads_na(tiny_run_config, tmp_path):
    from lgvq_core.config.describe import dumps_toml

    tiny_run_config["tasks"] = [{"type": "reconstruction", "metrics": ["psnr"]}]
    tiny_run_config["compare"] = {
        "seeds": [0],
        "downstream": ["prior.toml"],
        "reference": "baseline",
        "arms": [
            {"label": "baseline", "overrides": ["alignment=[]"]},
            {"label": "LG-VQ"},
            {"label": "LG-VQ-x10", "overrides": ["alignment[0].weight=1.0"], "downstream": False},
        ],
    }
    file = write_run_file(tiny_run_config, tmp_path / "compare.toml")
    prior = {
        "tokenizer": {"run_dir": "set by lgvq compare"},
        "run": {"name": "prior", "progress": "off"},
        "downstream": {"type": "code-gpt", "layers": 1, "heads": 2, "width": 16},
        "train": {"batch_size": 4, "max_steps": 2, "val_every": 2},
        "tasks": [{"type": "generation-fid", "samples": 4, "reference_images": 4, "batch_size": 4, "save_images": 0}],
    }
    (tmp_path / "prior.toml").write_text(dumps_toml(prior))
    markdown, data, folder = run_comparison(file, out=tmp_path / "cmp", say=quiet)
    state = json.loads((folder / "compare-state.json").read_text())
    assert sorted(state["runs"]) == [
        "LG-VQ-x10/seed-0",
        "LG-VQ/seed-0",
        "LG-VQ/seed-0/prior",
        "baseline/seed-0",
        "baseline/seed-0/prior",
    ]
    row = table_rows(markdown)["prior: validation: bits_per_code ↓"]
    assert row.split(" | ")[3] == "n/a"  # the LG-VQ-x10 column


def test_the_example_compares_five_seeds_and_an_arm_per_lg_weight_scale():
    config = load_run_file(EXAMPLE).config
    assert len(config.compare.seeds) >= 5 and config.compare.reference == "baseline"
    labels = [arm.label for arm in config.compare.arms]
    assert labels == ["baseline", "LG-x1", "LG-x10", "LG-x100"]
    weights = [a.config.weight for a in config.alignment]
    scales = {"LG-x1": 0.1, "LG-x10": 1.0, "LG-x100": 10.0}  # of the run file's weights (x10 the official)
    for arm in config.compare.arms[1:]:
        scaled = [round(w * scales[arm.label], 10) for w in weights]
        given = [float(o.split("=")[1]) for o in arm.overrides] or weights
        assert given == pytest.approx(scaled), arm.label


# ------------------------------------------------------------------------------------------
# metrics.jsonl cut by a crash
# ------------------------------------------------------------------------------------------
def test_a_cut_last_metrics_line_is_dropped_and_a_damaged_middle_line_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "split": "val", "rec_loss": 0.5}\n{"step": 3, "lo')
    assert [r["step"] for r in read_metric_lines(path)] == [1, 2]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(RunDirError, match="line 2"):
        read_metric_lines(path)


def test_options_that_do_not_fit_the_source_are_refused(seeded_file, tmp_path, lgvq_cli):
    labels = lgvq_cli("compare", str(seeded_file), "--labels", "a", "b")
    assert labels.code == 1 and "[[compare.arms]]" in labels.err
    seeds = lgvq_cli("compare", str(seeded_file), "--seeds", "0", "--out", str(tmp_path / "cmp"))
    assert seeds.code == 1 and "--seeds must be at least 1" in seeds.err
    directories = lgvq_cli("compare", str(tmp_path), str(tmp_path), "--seeds", "2")
    assert directories.code == 1 and "--seeds applies to a run file" in directories.err


# ------------------------------------------------------------------------------------------
# downstream models on each arm's codes
# ------------------------------------------------------------------------------------------
def test_downstream_runs_train_on_every_arms_codes_and_join_the_table(tiny_run_config, tmp_path):
    from lgvq_core.config.describe import dumps_toml

    tiny_run_config["tasks"] = [{"type": "reconstruction", "metrics": ["psnr"]}]
    tiny_run_config["compare"] = {"seeds": [0], "downstream": ["prior.toml"]}
    file = write_run_file(tiny_run_config, tmp_path / "compare.toml")
    prior = {
        "tokenizer": {"run_dir": "set by lgvq compare"},
        "run": {"name": "prior", "progress": "off"},
        "downstream": {"type": "code-gpt", "layers": 1, "heads": 2, "width": 16},
        "train": {"batch_size": 4, "max_steps": 2, "val_every": 2},
        "tasks": [{"type": "generation-fid", "samples": 4, "reference_images": 4, "batch_size": 4, "save_images": 0}],
    }
    (tmp_path / "prior.toml").write_text(dumps_toml(prior))
    lines: list[str] = []
    markdown, data, folder = run_comparison(file, out=tmp_path / "cmp", say=lines.append)
    state = json.loads((folder / "compare-state.json").read_text())
    assert sorted(state["runs"]) == ["LG-VQ/seed-0", "LG-VQ/seed-0/prior", "baseline/seed-0", "baseline/seed-0/prior"]
    # each downstream run trained on its own arm's tokenizer run
    for arm in ("LG-VQ", "baseline"):
        resolved = (Path(state["runs"][f"{arm}/seed-0/prior"]["run_dir"]) / "resolved.toml").read_text()
        assert Path(state["runs"][f"{arm}/seed-0"]["run_dir"]).resolve().as_posix() in resolved
    rows = table_rows(markdown)
    assert "prior: generation-fid: fid ↓" in rows and "prior: validation: bits_per_code ↓" in rows
    assert not any(name.startswith("prior: generation-fid: samples") for name in rows)  # only ranked numbers
    # run again: nothing is trained
    again: list[str] = []
    run_comparison(file, out=tmp_path / "cmp", say=again.append)
    assert not any("training" in line for line in again) and sum("kept" in line for line in again) == 4


def test_downstream_rows_keep_ranked_numbers_and_their_shuffled_controls():
    from lgvq_core.runner.compare_seeds import merge_downstream

    info = {"eval": {}}
    downstream = {
        "val": {"bits_per_code": 1.5},
        "eval": {
            "grounding-scores": {"acc@0.5": 0.25, "expressions": 40, "better": {"acc@0.5": "higher"}},
            "vqa-scores": {
                "accuracy": 0.5,
                "per_type": {"color": {"accuracy": 0.75, "questions": 4}},
                "shuffled_images": {"accuracy": 0.25, "questions": 8},
                "question_only": {"accuracy": 0.3, "per_type": {"color": {"accuracy": 0.2}}},
                "answer_prior": {"accuracy": 0.1},
                "better": {"accuracy": "higher", "per_type.color.accuracy": "higher"},
            },
            "generation-fid": {
                "fid": 180.0,
                "floor": {"fid": 45.0, "what": "halves"},
                "ceiling": {"fid": 420.0},
                "better": {"fid": "lower"},
            },
        },
    }
    merge_downstream(info, "ground", downstream)
    assert info["eval"]["ground: grounding-scores"] == {"better": {"acc@0.5": "higher"}, "acc@0.5": 0.25}
    vqa = info["eval"]["ground: vqa-scores"]
    assert vqa["accuracy"] == 0.5 and vqa["per_type"] == {"color": {"accuracy": 0.75}}
    assert vqa["shuffled_images"] == {"accuracy": 0.25}  # the control, shown unranked
    assert vqa["question_only"] == {"accuracy": 0.3, "per_type": {"color": {"accuracy": 0.2}}}  # baselines too
    assert vqa["answer_prior"] == {"accuracy": 0.1}
    fid = info["eval"]["ground: generation-fid"]
    assert fid["fid"] == 180.0 and fid["floor"] == {"fid": 45.0} and fid["ceiling"] == {"fid": 420.0}
    assert info["eval"]["ground: validation"] == {"bits_per_code": 1.5, "better": {"bits_per_code": "lower"}}


# ------------------------------------------------------------------------------------------
# a damaged compare-state.json
# ------------------------------------------------------------------------------------------
GOOD_ENTRY = {"run_dir": "runs/x", "fingerprint": "f", "arm": "baseline", "seed": 0, "seconds": 1.5}
BAD_STATES = {
    "a list": ([], "$: expected a table of the comparison's runs, got list"),
    "runs as a list": ({"version": 1, "runs": []}, "$.runs: expected a table, got list"),
    "an entry that is not a table": ({"version": 1, "runs": {"a": 5}}, "$.runs['a']: expected a table, got int"),
    "no run_dir": ({"version": 1, "runs": {"a": {"fingerprint": "f"}}}, "$.runs['a']: missing 'run_dir'"),
    "an integer run_dir": (
        {"version": 1, "runs": {"a": {**GOOD_ENTRY, "run_dir": 5}}},
        "$.runs['a'].run_dir: expected a string, got integer 5",
    ),
    "seconds NaN": (
        {"version": 1, "runs": {"a": {**GOOD_ENTRY, "seconds": float("nan")}}},
        "$.runs['a'].seconds: must be a finite number, got nan",
    ),
    "started as a list": ({"version": 1, "runs": {}, "started": ["a"]}, "$.started: expected a table, got list"),
}


@pytest.mark.parametrize("name", list(BAD_STATES))
def test_a_damaged_state_file_is_one_error_naming_the_key(seeded_file, tmp_path, name):
    data, message = BAD_STATES[name]
    folder = tmp_path / "cmp"
    folder.mkdir()
    (folder / "compare-state.json").write_text(json.dumps(data))
    with pytest.raises(RunDirError) as info:
        run_comparison(seeded_file, out=folder, runner=presets(tmp_path), say=quiet)
    text = str(info.value)
    assert f"compare-state.json: {message}" in text and "delete it to start over" in text and "\n" not in text


@pytest.mark.parametrize("content", [b'{"metrics": {"psnr": 1', b"\xff\xfe garbage", b"[1, 2]", b'{"metrics": 5}'])
def test_table_mode_names_a_corrupt_task_result_and_how_to_rewrite_it(tmp_path, capsys, content):
    from lgvq_core.cli import main
    from lgvq_core.runner.compare_seeds import RunSpec

    runner = PresetRunner(KNOWN, str(tmp_path / "calls.jsonl"))
    dirs = [
        runner(RunSpec(arm, 0, "x.toml", (f"run.name=x-{arm.lower()}", "run.seed=0"), str(tmp_path / "s"))).run_dir
        for arm in KNOWN
    ]
    broken = Path(dirs[0]) / "eval" / "reconstruction.json"
    broken.write_bytes(content)
    assert main(["compare", *dirs, "--labels", *KNOWN, "--out", str(tmp_path / "table")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lgvq compare: error: {broken}: not a task result") and f"lgvq eval {dirs[0]}" in err
    assert len(err.splitlines()) == 1


def test_a_downstream_run_shows_the_alignment_losses_of_its_tokenizer(tmp_path):
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "resolved.toml").write_text(
        '[run]\nname = "t"\n[[alignment]]\ntype = "semantic-nce"\n[[alignment]]\ntype = "relation"\n'
    )
    prior = tmp_path / "prior"
    (prior / "eval").mkdir(parents=True)
    (prior / "eval" / "generation-fid.json").write_text(json.dumps({"metrics": {"fid": 100.0}}))
    (prior / "resolved.toml").write_text(f'[run]\nname = "p"\n[tokenizer]\nrun_dir = "{tokenizer}"\n')
    assert run_info(prior)["run"]["alignment"] == ["semantic-nce", "relation"]
    (tokenizer / "resolved.toml").write_bytes(b"\xff")
    assert run_info(prior)["run"]["alignment"] == ["? (tokenizer run unreadable)"]


def test_controls_come_from_each_tasks_spec_not_from_core():
    from lgvq_core.runner.compare_seeds import merge_downstream, task_controls

    assert task_controls("vqa-scores") == ("shuffled_images", "question_only", "answer_prior")
    assert task_controls("no-such-task") == ()
    results = {"accuracy": 0.5, "shuffled_images": {"accuracy": 0.25}, "better": {"accuracy": "higher"}}
    undeclared, declared = {"eval": {}}, {"eval": {}}
    merge_downstream(undeclared, "x", {"eval": {"my-task": results}, "val": {}}, controls_of=lambda task: ())
    merge_downstream(
        declared, "x", {"eval": {"my-task": results}, "val": {}}, controls_of=lambda task: ("shuffled_images",)
    )
    assert "shuffled_images" not in undeclared["eval"]["x: my-task"]
    assert declared["eval"]["x: my-task"]["shuffled_images"] == {"accuracy": 0.25}
