"""The worked example of docs/downstream.md runs as written.

The commands are taken from the document's bash block and run by bash in a scratch folder; `lgvq`
there is a small wrapper that adds ``--set`` overrides shrinking the step counts and dataset sizes
(nothing else changes). The run files shown in the document must be the files under examples/.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomli

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "downstream.md"
SECTION = "## Worked example"

# Overrides per run file: a few steps on a few images, so that the example costs seconds in CI.
SHRINK = {
    "examples/downstream/tokenizer.toml": [
        "train.max_steps=2",
        "train.warmup_steps=0",
        "train.batch_size=8",
        "train.val_every=2",
        "train.checkpoint_every=2",
        "train.sample_every=2",
        "data.num_train=16",
        "data.num_val=8",
    ],
    "examples/downstream/code-gpt.toml": [
        "train.max_steps=3",
        "train.warmup_steps=0",
        "train.batch_size=8",
        "train.val_every=3",
        "train.checkpoint_every=3",
        "tasks.0.samples=4",
        "tasks.0.batch_size=4",
    ],
}

WRAPPER = """#!{python}
import sys

from lgvq_core.cli import main

SHRINK = {shrink!r}
argv = sys.argv[1:]
if argv[:1] in (["run"], ["check"]):
    for name, overrides in SHRINK.items():
        if name in argv:
            for override in overrides:
                argv += ["--set", override]
sys.exit(main(argv))
"""


def worked_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_run_files_shown_are_the_example_files():
    shown = fenced_blocks(worked_example(), "toml")
    files = [ROOT / name for name in SHRINK]
    assert shown == [path.read_text(encoding="utf-8") for path in files]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_worked_example_runs_as_written(tmp_path):
    (commands,) = fenced_blocks(worked_example(), "bash")
    assert "lgvq sample $PRIOR" in commands and "lgvq eval $PRIOR" in commands

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "lgvq"
    wrapper.write_text(WRAPPER.format(python=sys.executable, shrink=SHRINK))
    wrapper.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "LGVQ_CACHE_DIR": str(tmp_path / "cache"),  # a fresh code cache: the first run writes it
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (tokenizer,) = (work / "runs" / "downstream-tokenizer").iterdir()
    (prior,) = (work / "runs" / "downstream-code-gpt").iterdir()
    assert f"run directory: runs/downstream-tokenizer/{tokenizer.name}" in done.stdout
    assert "codes: encoding the train split (16 shapes items) once with the frozen tokenizer" in done.stdout
    assert done.stdout.count("codes: wrote ") == 2  # train and val, encoded once; sample and eval reuse them
    assert "codes: reusing " in done.stdout

    # The prior records the tokenizer it was trained on, and never re-saves it.
    resolved = tomli.loads((prior / "resolved.toml").read_text())
    checkpoint = Path(resolved["tokenizer"]["checkpoint"])
    assert resolved["tokenizer"]["run_dir"] == str(tokenizer.resolve())
    assert checkpoint.parent == tokenizer.resolve() / "checkpoints"
    assert resolved["tokenizer"]["sha256"] == sha256(checkpoint / "model.safetensors")
    assert resolved["data"]["type"] == "shapes" and resolved["text_encoder"]["type"] == "minilm"
    records = [json.loads(line) for line in (prior / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [3]
    assert all(r["bits_per_code"] > 0 for r in records)

    # `lgvq sample $PRIOR -n 16 --seed 1`
    generated = prior / "generated" / "step-0000003-seed-1"
    assert len(list((generated / "images").glob("*.png"))) == 16 and (generated / "grid.png").is_file()
    record = json.loads((generated / "sample.json").read_text())
    assert record["samples"] == 16 and record["seed"] == 1 and record["sampling"]["top_k"] == 32
    assert record["tokenizer"]["sha256"] == resolved["tokenizer"]["sha256"]

    # generation-fid at the end of the run, then again by `lgvq eval $PRIOR`.
    metrics = json.loads((prior / "eval" / "generation-fid.json").read_text())["metrics"]
    assert math.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert metrics["samples"] == 4 and metrics["reference"]["images"] == 8
    assert done.stdout.count("generation-fid: FID of 4 samples against 8 validation images") == 2


def test_the_placeholder_message_shown_is_what_lgvq_check_says():
    from lgvq_core.errors import ConfigError
    from lgvq_core.run_file import load_run_file

    (shown,) = fenced_blocks(DOC.read_text(encoding="utf-8"), "text")
    with pytest.raises(ConfigError) as info:
        load_run_file(ROOT / "examples" / "paper" / "celeba-hq" / "code-gpt-unconditional.toml")
    assert info.value.problems == [shown.strip()]
