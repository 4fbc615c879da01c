"""The GPU rung (examples/gpu/, bench/gpu_compare.py) runs its whole comparison at tiny size on CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import tomli

from lgvq_core.run_file import load_run_file

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "examples" / "gpu"
sys.path.insert(0, str(ROOT / "bench"))


def test_the_gpu_preset_is_the_small_comparison_one_size_up():
    small = tomli.loads((ROOT / "examples" / "compare.toml").read_text(encoding="utf-8"))
    gpu = tomli.loads((GPU / "compare.toml").read_text(encoding="utf-8"))
    assert gpu["run"]["device"] == "cuda" and gpu["data"]["image_size"] == 2 * small["data"]["image_size"]
    # the same arms, seeds, reference, alignment losses and levers; only sizes differ
    assert gpu["compare"]["arms"] == small["compare"]["arms"]
    assert gpu["compare"]["seeds"] == small["compare"]["seeds"] and gpu["compare"]["reference"] == "baseline"
    # every downstream model of the small comparison, and grounding, which the CPU budget leaves out
    assert [Path(p).name for p in gpu["compare"]["downstream"]] == [
        "vqa.toml",
        "captioning.toml",
        "grounding.toml",
        "unconditional.toml",
    ]
    assert {Path(p).name for p in small["compare"]["downstream"]} < {Path(p).name for p in gpu["compare"]["downstream"]}
    assert gpu["alignment"] == small["alignment"] and gpu["model"]["backbone"] == small["model"]["backbone"]
    for name in gpu["compare"]["downstream"]:
        table = tomli.loads((GPU / name).read_text(encoding="utf-8"))
        assert table["run"]["device"] == "cuda", name
    config = load_run_file(GPU / "compare.toml").config
    assert config.data.config.image_size == 64 and config.model.quantizer.config.codebook_size == 512


@pytest.mark.slow
def test_the_gpu_rung_runs_its_comparison_tiny_on_cpu(tmp_path, capsys):
    import gpu_compare

    result = gpu_compare.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--seeds", "1", "--jobs", "1"])
    assert result["arms"] == ["baseline", "LG-x1", "LG-x10", "LG-x100"] and result["seeds"] == [0]
    table = Path(result["table"]).read_text(encoding="utf-8")
    assert "LG-x10 − baseline" in table
    for row in ("PSNR", "code-probe: linear_mean", "vqa: vqa-scores: accuracy", "unconditional: generation-fid: fid"):
        assert row in result["means"], row
    state = json.loads((tmp_path / "comparison" / "compare-state.json").read_text())
    downstream = sorted(key.split("/", 2)[2] for key in state["runs"] if key.count("/") == 2)
    # four downstream models on the two arms that train them (baseline and LG-x10)
    assert downstream == sorted(["captioning", "grounding", "unconditional", "vqa"] * 2)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")
