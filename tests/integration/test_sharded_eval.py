"""`lgvq eval` sharded over torchrun's ranks gives the numbers of a single-process evaluation."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.tasks import EvalShard
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file

METRICS = ["psnr", "ssim", "fid", "usage"]


def test_shards_are_contiguous_slices_whose_sizes_differ_by_at_most_one():
    slices = [EvalShard(rank, 3).indices(10) for rank in range(3)]
    assert [list(s) for s in slices] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert list(EvalShard().indices(5)) == [0, 1, 2, 3, 4]
    assert [len(EvalShard(rank, 4).indices(2)) for rank in range(4)] == [1, 1, 0, 0]


class PooledFeatures(nn.Module):
    """A small stand-in for Inception: 4×4 average pooling of each channel, 48 features per image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def trained_run(tmp_path: Path) -> Path:
    """2 training steps of the tiny run on 9 validation images; the run's own evaluation is single-process."""
    features = tmp_path / "pooled.pt"
    torch.jit.script(PooledFeatures()).save(str(features))
    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name="sharded", output_dir=str(tmp_path / "runs"))
    config["data"].update(num_val=9)
    config["tasks"] = [
        {"type": "reconstruction", "metrics": METRICS, "grid_images": 2, "fid_feature_weights": str(features)}
    ]
    return train(load_run_file(write_run_file(config, tmp_path / "sharded.toml"))).run_dir


@pytest.mark.slow
def test_two_process_gloo_evaluation_equals_the_single_process_one(tmp_path):
    run_dir = trained_run(tmp_path)
    result_file = run_dir / "eval" / "reconstruction.json"
    single = json.loads(result_file.read_text())["metrics"]
    result_file.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "lgvq_core.cli", "eval", str(run_dir)]
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "2 processes" in out.stdout
    sharded = json.loads(result_file.read_text())["metrics"]
    assert single["images"] == sharded["images"] == 9  # 5 + 4 images, not 9 per rank
    assert single["fid"] > 0
    for key in ("psnr", "ssim", "fid", "usage", "perplexity"):
        assert sharded[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    assert (run_dir / "eval" / "reconstruction" / "reconstructions.png").is_file()
