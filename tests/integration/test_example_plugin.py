"""The example third-party plugin installs with pip, is found through its entry point and trains.

It is installed into a temporary folder put on sys.path/PYTHONPATH (never into the environment).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lgvq_core.context import BuildContext
from lgvq_core.registry import build, get_registry
from lgvq_core.testing.fixtures import write_run_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "lgvq-example-backbone"


@pytest.fixture
def example(install_plugin):
    return install_plugin(EXAMPLE)


def test_the_installed_example_is_listed_by_the_cli(example):
    result = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", "list", "backbone", "example*"],
        capture_output=True,
        text=True,
        env={**os.environ, "LGVQ_STRICT_PLUGINS": "1"},
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "example-conv  small convolutional autoencoder: stride-2 conv stages down, transposed convs up  "
        "[example-backbone: lgvq-example-backbone 0.1.0]"
    ]


def test_the_example_schema_comes_from_its_config_class(example):
    result = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", "schema", "backbone", "example-conv"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "config class: lgvq_example_backbone.config.ExampleConvConfig" in result.stdout
    assert '  loss      "mse" | "l1"  = "mse"' in result.stdout.splitlines()


def test_the_example_builds_through_the_registry_and_learns(example, make_plugin_manager):
    make_plugin_manager(["core", "testing", "example-backbone"])
    spec = get_registry().get("backbone", "example-conv")
    torch.manual_seed(0)
    quantizer = build("quantizer", {**spec.spec.default_quantizer, "codebook_size": 32, "dim": 8})
    model = build(
        "backbone", {"type": "example-conv", "channels": 8, "stages": 2}, context=BuildContext(quantizer=quantizer)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.rand(4, 3, 16, 16) * 2 - 1

    losses = []
    for _ in range(15):
        terms = model.generator_loss(images, model(images), 0, None)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(terms["rec_loss"].item())

    assert spec.distribution == "lgvq-example-backbone"
    assert model(images).quant.shape == (4, 8, 4, 4)
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_the_example_passes_its_own_test_suite(example):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=EXAMPLE,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout.splitlines()[-1] and "failed" not in result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_a_run_file_naming_the_example_trains_with_lgvq_run(example, tiny_run_config, run_dir, tmp_path):
    tiny_run_config["model"] = {
        "backbone": {"type": "example-conv", "channels": 8, "stages": 2},
        "quantizer": {"type": "vq", "codebook_size": 32, "dim": 16},
    }
    path = write_run_file(tiny_run_config, tmp_path / "example.toml")

    result = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    [run] = (run_dir / "tiny").iterdir()
    plugins = json.loads((run / "plugins.json").read_text())["plugins"]
    assert {"name": "example-backbone", "distribution": "lgvq-example-backbone"}.items() <= next(
        p for p in plugins if p["name"] == "example-backbone"
    ).items()
    train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in train if m.get("split") == "train"][-1]
    assert last["step"] == tiny_run_config["train"]["max_steps"]
    assert math.isfinite(last["loss"])


@pytest.mark.slow
def test_the_plugin_authors_command_runs_the_contract_and_the_combinations_on_the_example(example, tmp_path):
    """The documented command, from the example's own folder, with the example installed from that folder."""
    result = subprocess.run(
        [sys.executable, "-m", "lgvq_core.testing.plugin_check", ".", "--quantizer", "vq"]
        + ["--text-encoder", "tiny-text", "--steps", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=EXAMPLE,
        env={**os.environ, "LGVQ_TEST_COMPONENTS": "1", "LGVQ_STRICT_PLUGINS": "1"},
        timeout=600,
    )

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "== plugin contract: example-backbone" in lines
    assert any(
        " passed in " in line and "failed" not in line
        for line in lines[: lines.index("== combinations with example-backbone")]
    )
    ok = sorted(line.split(":")[0].split()[-1] for line in lines if line.startswith("ok "))
    assert ok == ["example-conv+vq+lg-tiny-text", "example-conv+vq+no-lg"]
    assert "2 passed, 0 failed, 0 skipped" in lines
    assert [p.name for p in tmp_path.iterdir()] and all(
        (run / "checkpoints" / "last.json").exists() for folder in tmp_path.iterdir() for run in folder.iterdir()
    )
