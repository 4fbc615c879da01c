"""`lgvq eval` on real run directories: every task writes its result file and its pictures."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file

TASKS = ["reconstruction", "retrieval", "masked-words", "relation", "codebook"]
PROBE = {"steps": 3, "batch_size": 4}


def tiny_run(tmp_path: Path, name: str, alignment: bool) -> Path:
    """tiny-ae + vq (K 32) + tiny-text on 32 px shapes, 2 steps, with every task (FID left out: slow on CPU)."""
    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name=name, output_dir=str(tmp_path / "runs"))
    if not alignment:
        config["alignment"] = []
    config["tasks"] = [
        {"type": "reconstruction", "metrics": ["psnr", "ssim", "usage"], "grid_images": 4},
        {"type": "retrieval", "report_images": 3, "probe": PROBE},
        {"type": "masked-words", "probe": PROBE},
        {"type": "relation", "heatmaps": 2, "probe": PROBE},
        {"type": "codebook"},
    ]
    path = write_run_file(config, tmp_path / f"{name}.toml")
    return train(load_run_file(path)).run_dir


def check_results(run_dir: Path, matcher: str) -> dict:
    results = {}
    for task in TASKS:
        record = json.loads((run_dir / "eval" / f"{task}.json").read_text())
        assert record["task"] == task and record["step"] == 2
        results[task] = record["metrics"]
    reconstruction = results["reconstruction"]
    assert reconstruction["images"] == 8 and math.isfinite(reconstruction["psnr"])
    assert 0 < reconstruction["usage"] <= 1 and -1 <= reconstruction["ssim"] <= 1
    retrieval = results["retrieval"]
    assert retrieval["matcher"] == matcher and 0 <= retrieval["r@1"] <= retrieval["r@5"] <= retrieval["r@10"] <= 1
    for protocol in ("leak-free", "official"):
        entry = results["masked-words"][protocol]["mask-1"]
        assert entry["captions"] == 8 and 0 <= entry["recall@1"] <= 1 and 0 <= entry["shuffled_recall@1"] <= 1
    assert results["masked-words"]["matcher"] == matcher
    assert results["relation"]["matcher"] == matcher and 0 <= results["relation"]["mse"] <= 4
    assert results["codebook"]["codebook_size"] == 32

    eval_dir = run_dir / "eval"
    assert Image.open(eval_dir / "reconstruction" / "reconstructions.png").size[0] > 0
    assert (eval_dir / "retrieval" / "retrieval.html").read_text().count("data:image/png") == 3
    assert Image.open(eval_dir / "relation" / "relation-heatmaps.png").size[0] > 0
    # 32 codes of 4×4 pixels (tiny-ae, f 4), 6 per row
    assert Image.open(eval_dir / "codebook" / "codebook.png").size == (24, 24)
    assert Image.open(eval_dir / "codebook" / "code-usage.png").size[0] > 0
    return results


@pytest.mark.slow
def test_lgvq_eval_writes_every_task_of_an_lg_run(tmp_path, lgvq_cli):
    run_dir = tiny_run(tmp_path, "lg", alignment=True)
    at_end_of_training = check_results(run_dir, "model")  # `lgvq run` evaluated the [[tasks]] already

    shutil.rmtree(run_dir / "eval")
    result = lgvq_cli("eval", str(run_dir), "--checkpoint", "last")
    assert result.code == 0, result.err
    assert "wrote 5 result file(s)" in result.out
    assert "leak-free.mask-1.recall@1" in result.out
    again = check_results(run_dir, "model")
    assert again["reconstruction"]["psnr"] == pytest.approx(at_end_of_training["reconstruction"]["psnr"], rel=1e-5)
    assert again["retrieval"] == at_end_of_training["retrieval"]


@pytest.mark.slow
def test_a_baseline_run_is_evaluated_through_a_probe(tmp_path, lgvq_cli, capsys):
    run_dir = tiny_run(tmp_path, "baseline", alignment=False)
    out = capsys.readouterr().out
    assert out.count("training a probe") == 1  # trained once, reused by the other tasks
    check_results(run_dir, "probe")

    result = lgvq_cli("eval", str(run_dir), "--checkpoint", "last", "--tasks", "codebook")
    assert result.code == 0, result.err
    assert "codebook_size" in result.out
