"""Tasks that cannot serve a model are refused before any work; a finished run is not resumed; a resume
rewrites every evaluation file from one checkpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lgvq_core.quantizers.vq import VectorQuantizer
from lgvq_core.run_file import load_run_file, validate_run_file
from lgvq_core.runner.loop import train
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file


def tiny_run(tmp_path: Path, tasks: list[dict]) -> Path:
    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name="tasks", output_dir=str(tmp_path / "runs"))
    config["tasks"] = tasks
    return train(load_run_file(write_run_file(config, tmp_path / "tasks.toml"))).run_dir


def test_lgvq_check_warns_that_a_multi_code_quantizer_cannot_serve_relation_and_codebook(make_plugin_manager):
    make_plugin_manager(["core", "testing", "backbones", "tasks"])
    config = copy.deepcopy(TINY_RUN)
    config["model"] = {
        "backbone": {"type": "tiny-ae", "hidden": 8, "downsample": 4},
        "quantizer": {"type": "vqct", "dim": 16, "hidden_dim": 8, "min_frequency": 0},
    }
    config["tasks"] = [{"type": "reconstruction"}, {"type": "relation"}, {"type": "codebook"}]

    loaded = validate_run_file(config)

    warnings = [str(w) for w in loaded.warnings if "one code per latent position" in str(w)]
    assert warnings == [
        f"$.tasks[{i}]: warning: task {name!r} needs one code per latent position, but quantizer 'vqct' picks 3; "
        "evaluation will refuse this task (and run the others)"
        for i, name in ((1, "relation"), (2, "codebook"))
    ]


@pytest.mark.slow
def test_refused_tasks_do_no_work_and_the_others_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(VectorQuantizer, "codes_per_position", 2)  # as if it picked two codes per position

    run_dir = tiny_run(
        tmp_path, [{"type": "relation"}, {"type": "reconstruction", "metrics": ["psnr"]}, {"type": "codebook"}]
    )

    out = capsys.readouterr().out
    reason = "needs one code per latent position; this run's quantizer (VectorQuantizer) picks 2 per position"
    assert f"task relation: refused: relation {reason}" in out
    assert f"task codebook: refused: codebook {reason}" in out
    assert "task relation: running" not in out and "task reconstruction: running" in out
    assert any(line.split() == ["relation", "refused", "relation", *reason.split()] for line in out.splitlines())
    relation = json.loads((run_dir / "eval" / "relation.json").read_text())
    assert relation["refused"] == f"relation {reason}" and "metrics" not in relation
    assert not (run_dir / "eval" / "relation").exists() and not (run_dir / "eval" / "codebook").exists()
    assert json.loads((run_dir / "eval" / "reconstruction.json").read_text())["metrics"]["psnr"] > 0


@pytest.mark.slow
def test_a_finished_run_is_not_resumed_and_a_resume_rewrites_every_eval_file(tmp_path, lgvq_cli):
    run_dir = tiny_run(tmp_path, [{"type": "reconstruction", "metrics": ["psnr"]}])
    assert lgvq_cli("eval", str(run_dir), "--tasks", "codebook").code == 0
    codebook = run_dir / "eval" / "codebook.json"
    stale = json.loads(codebook.read_text())
    codebook.write_text(json.dumps({**stale, "step": -1}))  # marks the file: a rewrite replaces it

    finished = lgvq_cli("run", "--resume", str(run_dir))
    resumed = lgvq_cli("run", "--resume", str(run_dir), "--set", "train.max_steps=4")

    assert finished.code == 1
    assert finished.err.strip() == (
        f"lgvq run: error: {run_dir}: the run is already at train.max_steps = 2 (checkpoints/last is at step 2); "
        f"nothing to resume. To train further, raise it: lgvq run --resume {run_dir} --set train.max_steps=4. "
        f"To evaluate again: lgvq eval {run_dir}"
    )
    assert resumed.code == 0, resumed.err
    steps = {p.stem: json.loads(p.read_text())["step"] for p in (run_dir / "eval").glob("*.json")}
    assert set(steps) == {"reconstruction", "codebook"}
    assert steps["codebook"] == steps["reconstruction"] in (2, 4)
    assert json.loads(codebook.read_text())["options"] == stale["options"]
