"""The training runner end to end on CPU, with the test doubles and the real built-in components."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lgvq_core.config.describe import dumps_toml
from lgvq_core.errors import NonFiniteLossError
from lgvq_core.plugins import hookimpl
from lgvq_core.registry import get_plugin_manager
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.checkpoint import load_checkpoint, resolve_checkpoint
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import create_run_dir, read_metrics

LG_TERMS = ("semantic_nce_loss", "masked_text_loss", "relation_loss")


def tiny_run_file(
    tmp_path: Path, name: str = "tiny", alignment: bool = True, adversarial: bool = False, **train
) -> Path:
    """A run file for a seconds-long CPU run: tiny-ae + vq + tiny-text on 32 px shapes."""
    data = {
        "run": {"name": name, "seed": 3, "output_dir": str(tmp_path / "runs"), "log_every": 1, "progress": "log"},
        "model": {
            "backbone": {"type": "tiny-ae", "hidden": 8, "adversarial": adversarial, "disc_start": 2},
            "quantizer": {"type": "vq", "codebook_size": 32, "dim": 16},
        },
        "data": {"type": "shapes", "image_size": 32, "num_train": 64, "num_val": 8},
        "train": {
            "batch_size": 4,
            "max_steps": 6,
            "base_lr": 1e-3,
            "lr_scaling": "none",
            "val_every": 3,
            "sample_every": 3,
            "checkpoint_every": 3,
            **train,
        },
    }
    if alignment:
        data["text_encoder"] = {"type": "tiny-text", "width": 16}
        data["alignment"] = [
            {"type": "semantic-nce", "weight": 0.1},
            {"type": "masked-text", "weight": 0.1},
            {"type": "relation", "weight": 0.1},
        ]
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps_toml(data))
    return path


def run_dirs(tmp_path: Path, name: str) -> list[Path]:
    return sorted((tmp_path / "runs" / name).iterdir())


def train_records(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir) if r["split"] == "train"}


def test_run_writes_a_complete_run_directory(tmp_path):
    path = tiny_run_file(tmp_path)
    result = train(load_run_file(path), source_text=path.read_text())
    run_dir = result.run_dir
    assert result.step == 6 and result.stop_reason == "max_steps"
    for name in ("config.toml", "resolved.toml", "plugins.json", "env.txt", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "config.toml").read_text() == path.read_text()
    records = train_records(run_dir)
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    for record in records.values():
        assert math.isfinite(record["loss"])
        for term in ("rec_loss", "quantizer_loss", *LG_TERMS):
            assert term in record
    # the total is the backbone terms plus the weighted LG terms
    r = records[1]
    assert r["loss"] == pytest.approx(r["rec_loss"] + r["quantizer_loss"] + 0.1 * sum(r[t] for t in LG_TERMS), rel=1e-5)
    val = [r for r in read_metrics(run_dir) if r["split"] == "val"]
    assert [r["step"] for r in val] == [3, 6]
    assert {"rec_loss", "psnr", "codebook_usage", "perplexity"} <= set(val[0])
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["step-0000003.png", "step-0000006.png"]
    last = resolve_checkpoint(run_dir, "last")
    tensors = load_file(str(last / "model.safetensors"))
    assert any(k.startswith("tokenizer.") for k in tensors)
    assert any(k.startswith("alignment.") for k in tensors)
    # the frozen text encoder is never saved
    encoder_shapes = {(1024, 16)}  # tiny-text embedding table (vocab x width)
    assert not any(tuple(v.shape) in encoder_shapes for v in tensors.values())
    assert resolve_checkpoint(run_dir, "best").is_dir()
    plugins = json.loads((run_dir / "plugins.json").read_text())
    assert {c["name"] for c in plugins["components"]} >= {"tiny-ae", "vq", "shapes", "tiny-text", "relation"}
    assert "torch:" in (run_dir / "env.txt").read_text()


def test_resolved_toml_is_a_valid_run_file_with_the_effective_lr(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, max_steps=1, lr_scaling="linear", base_lr=1e-4, accumulate=2)
    result = train(load_run_file(path))
    resolved = load_run_file(result.run_dir / "resolved.toml")
    # taming's rule: base_lr x accumulate x world_size x batch_size
    assert resolved.config.train.lr == pytest.approx(1e-4 * 2 * 1 * 4)
    assert resolved.config.model.quantizer.config.codebook_size == 32


def test_resume_continues_exactly(tmp_path):
    straight = tiny_run_file(tmp_path, name="straight", adversarial=True)
    result = train(load_run_file(straight))
    expected = train_records(result.run_dir)

    interrupted = tiny_run_file(tmp_path, name="resumed", adversarial=True)
    first = train(load_run_file(interrupted, overrides=["train.max_steps=3"]))
    assert first.step == 3
    resumed = train(
        load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=first.run_dir
    )
    assert resumed.run_dir == first.run_dir and resumed.step == 6
    got = train_records(first.run_dir)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # no duplicated lines after the resume
    for step in (4, 5, 6):
        for term in ("loss", "rec_loss", "quantizer_loss", "g_loss", "d_loss", *LG_TERMS):
            assert got[step][term] == expected[step][term], (step, term)


def test_every_loss_term_reaches_the_metrics_of_an_adversarial_run(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, adversarial=True, max_steps=3)
    result = train(load_run_file(path))
    records = train_records(result.run_dir)
    assert "g_loss" not in records[1] and "d_loss" not in records[2]  # disc_start = 2 (0-based step)
    assert "g_loss" in records[3] and "d_loss" in records[3]


class _PoisonRecon:
    """Makes the reconstruction NaN from a given step on."""

    def __init__(self, from_step: int) -> None:
        self.from_step = from_step

    @hookimpl
    def lgvq_after_quantize(self, run, output):
        if run.step + 1 >= self.from_step:
            output.recon.data.fill_(float("nan"))


def test_a_nan_loss_stops_the_run_naming_the_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, checkpoint_every=2, max_steps=6)
    poison = _PoisonRecon(from_step=4)
    manager = get_plugin_manager()
    manager.register(poison, name="poison")
    try:
        with pytest.raises(NonFiniteLossError) as info:
            train(load_run_file(path))
    finally:
        manager.unregister(poison)
    assert info.value.step == 4 and info.value.term == "rec_loss"
    assert "step 4" in str(info.value) and "'rec_loss'" in str(info.value)
    run_dir = run_dirs(tmp_path, "tiny")[0]
    last = resolve_checkpoint(run_dir, "last")
    assert last.name.startswith("step-0000002-")
    tensors, state = load_checkpoint(last)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_bf16_autocast_runs_on_cpu(tmp_path):
    path = tiny_run_file(tmp_path, alignment=True, max_steps=2)
    result = train(load_run_file(path, overrides=["run.precision=bf16"]))
    assert all(math.isfinite(r["loss"]) for r in train_records(result.run_dir).values())


def test_run_directories_are_never_reused(tmp_path):
    first = create_run_dir(tmp_path, "x")
    second = create_run_dir(tmp_path, "x")
    assert first != second and first.parent == second.parent
    assert (first / "checkpoints").is_dir() and (first / "samples").is_dir()


def _cli(*args: str, cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def test_cli_run_with_set_shows_progress_and_a_summary(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False)
    out = _cli("run", str(path), "--set", "train.max_steps=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "step 3/3" in out.stderr  # plain log lines when not a terminal
    assert "img/s" in out.stderr
    assert "done: 3 steps" in out.stdout and "run directory:" in out.stdout
    (run_dir,) = run_dirs(tmp_path, "tiny")
    assert sorted(train_records(run_dir)) == [1, 2, 3]


def test_sigterm_saves_last_and_resume_continues(tmp_path):
    path = tiny_run_file(
        tmp_path, alignment=False, max_steps=100000, checkpoint_every=100000, val_every=100000, sample_every=100000
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lgvq_core.cli", "run", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        metrics = None
        while time.time() < deadline:
            dirs = (
                list((tmp_path / "runs" / "tiny").glob("*/metrics.jsonl"))
                if (tmp_path / "runs" / "tiny").exists()
                else []
            )
            if dirs and len(dirs[0].read_text().splitlines()) >= 3:
                metrics = dirs[0]
                break
            time.sleep(0.2)
        assert metrics is not None, "the run did not start"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr  # the shell's rule for a signal, after saving
    assert "received SIGTERM" in stdout
    run_dir = metrics.parent
    last = resolve_checkpoint(run_dir, "last")
    _, state = load_checkpoint(last)
    stopped_at = state["step"]
    assert stopped_at >= 3
    out = _cli("run", "--resume", str(run_dir), "--set", f"train.max_steps={stopped_at + 2}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"resumed {run_dir} at step {stopped_at}" in out.stdout
    assert max(train_records(run_dir)) == stopped_at + 2


def test_best_at_the_last_step_is_also_last_one_folder_not_two_copies(tmp_path):
    # one validation, at the last step: it improves on nothing, so best is saved there
    result = train(load_run_file(tiny_run_file(tmp_path, alignment=False, val_every=4, max_steps=4)))
    folder = result.run_dir / "checkpoints"
    best = json.loads((folder / "best.json").read_text())
    last = json.loads((folder / "last.json").read_text())
    assert best["step"] == last["step"] == 4 and last["dir"] == best["dir"]
    assert len([p for p in folder.iterdir() if p.name.startswith("step-0000004")]) == 1
    # and the shared folder resumes exactly like a folder of its own
    resumed = train(
        load_run_file(result.run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=result.run_dir
    )
    straight = train(load_run_file(tiny_run_file(tmp_path, "straight", alignment=False, val_every=4, max_steps=6)))
    got, expected = train_records(resumed.run_dir), train_records(straight.run_dir)
    assert [got[s]["loss"] for s in (5, 6)] == [expected[s]["loss"] for s in (5, 6)]


def test_a_quantizer_whose_indices_miss_its_codebook_stops_the_run_at_the_first_step(tmp_path, monkeypatch):
    import dataclasses

    from lgvq_core.errors import LgvqError
    from lgvq_core.quantizers.vq import NearestCodeQuantizer

    forward = NearestCodeQuantizer.forward

    def shifted(self, z):  # a third-party mistake: indices offset by the codebook size
        out = forward(self, z)
        return dataclasses.replace(out, indices=out.indices + self.codebook_size)

    monkeypatch.setattr(NearestCodeQuantizer, "forward", shifted)
    with pytest.raises(LgvqError) as info:
        train(load_run_file(tiny_run_file(tmp_path, alignment=False, max_steps=3)))
    message = str(info.value)
    assert message.startswith("$.model.quantizer (vq): indices range over [") and "codebook_size is 32" in message
    assert "every index must be in [0, 32)" in message


def image_folder_run(tmp_path: Path, count: int, broken: set[int]) -> tuple[Path, Path, list[str]]:
    """A tiny run on an image-text-folder of ``count`` images, those in ``broken`` not images at all,
    with ``skip_bad_items``: (run file, data root, the JSONL lines); the validation file holds image 0."""
    from PIL import Image

    root = tmp_path / "folder"
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(count):
        if i in broken:
            (root / "img" / f"{i}.png").write_bytes(b"not an image")
        else:
            Image.new("RGB", (40, 40), (20 * i, 100, 200)).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "captions": [f"a picture number {i}"]}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "val.jsonl").write_text(lines[0] + "\n")
    path = tiny_run_file(tmp_path, alignment=False, max_steps=4, batch_size=3, skip_bad_items=True)
    text = path.read_text().replace(
        'type = "shapes"\nimage_size = 32\nnum_train = 64\nnum_val = 8',
        f'type = "image-text-folder"\nroot = "{root}"\nval_file = "val.jsonl"\nimage_size = 32',
    )
    path.write_text(text)
    return path, root, lines


def test_skip_bad_items_reports_what_was_skipped(tmp_path):
    path, root, lines = image_folder_run(tmp_path, 10, broken={3})
    out = _cli("run", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "skipped" in out.stdout and "3.png" in out.stdout
    strict = _cli("run", str(path), "--set", "train.skip_bad_items=false", cwd=tmp_path)
    assert strict.returncode == 1
    assert "3.png" in strict.stderr
    # a bad validation image is named too, not dropped from the metrics without a word
    (root / "img" / "0.png").write_bytes(b"not an image either")
    (root / "val.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n")
    out = _cli("run", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "skipped 1 unreadable item(s) of the validation split" in out.stdout and "0.png" in out.stdout


def test_a_training_split_with_no_readable_item_stops_with_an_error_not_a_loop(tmp_path):
    # skipping every batch went on forever (and held every skip in memory); now one epoch is the limit
    path, _, _ = image_folder_run(tmp_path, 12, broken=set(range(12)))
    out = _cli("run", str(path), cwd=tmp_path, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no item of the training split could be read in 4 batches in a row" in out.stderr
    assert "12 unreadable item(s) of 12" in out.stderr and "Traceback" not in out.stderr


TORCHRUN_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(*launcher: str, run_file: Path, cwd: Path) -> subprocess.Popen:
    """``torchrun LAUNCHER... -m lgvq_core.cli run RUN_FILE`` in the background."""
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "lgvq_core.cli", "run", str(run_file)]
    env = {**os.environ, **TORCHRUN_ENV}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a launched process; its stderr tail when it failed, ``""`` when it succeeded."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        return f"timed out after {timeout} s\n{err[-4000:]}"
    return "" if process.returncode == 0 else f"exit {process.returncode}\n{err[-4000:]}"


def _assert_same_training(tmp_path: Path, single: str, other: str) -> None:
    """Same per-step losses and final weights in two runs (every rank's loss is averaged in the records)."""
    (single_dir,) = run_dirs(tmp_path, single)
    (other_dir,) = run_dirs(tmp_path, other)  # rank 0 alone wrote the run directory
    a, b = train_records(single_dir), train_records(other_dir)
    for step in (1, 2, 3, 4):
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-4, abs=1e-6)
    wa = load_file(str(resolve_checkpoint(single_dir, "last") / "model.safetensors"))
    wb = load_file(str(resolve_checkpoint(other_dir, "last") / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_a_single_process_run(tmp_path):
    single = tiny_run_file(tmp_path, name="single", alignment=False, max_steps=4, batch_size=8, val_every=4)
    ddp = tiny_run_file(tmp_path, name="ddp", alignment=False, max_steps=4, batch_size=4, val_every=4)
    out = _cli("run", str(single), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    failure = _finish(_torchrun("--standalone", "--nproc_per_node", "2", run_file=ddp, cwd=tmp_path))
    assert not failure, failure
    _assert_same_training(tmp_path, "single", "ddp")


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_over_c10d_rendezvous_match_a_single_process_run(tmp_path):
    """The README's many-machines command, as 2 "nodes" x 1 process on loopback with gloo."""
    single = tiny_run_file(tmp_path, name="single", alignment=False, max_steps=4, batch_size=8, val_every=4)
    nodes = tiny_run_file(tmp_path, name="nodes", alignment=False, max_steps=4, batch_size=4, val_every=4)
    out = _cli("run", str(single), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    port = _free_loopback_port()
    launched = [
        _torchrun(
            "--nnodes", "2",
            "--nproc_per_node", "1",
            "--node_rank", str(node),
            "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", "lgvq-test",
            "--local-addr", "127.0.0.1",
            run_file=nodes,
            cwd=tmp_path,
        )
        for node in (0, 1)
    ]  # fmt: skip
    failures = [_finish(process, timeout=240) for process in launched]
    if any("EADDRINUSE" in f or "address already in use" in f.lower() or "Cannot assign" in f for f in failures):
        pytest.skip(f"torchrun's c10d rendezvous cannot bind 127.0.0.1:{port} here: {failures}")
    assert not any(failures), "\n".join(failures)
    _assert_same_training(tmp_path, "single", "nodes")


def test_extending_a_finished_run_is_exact_with_lg_losses_a_discriminator_vq_ema_and_validation_at_the_leg_end(
    tmp_path,
):
    """7 steps (validated at the end, as every finished run is), then --resume to 12, equals 12 straight.

    Every random draw of the run (text masks, decoder dropout, dead-code restarts, caption and
    crop sampling, validation loading) comes from a generator the checkpoint restores.
    """
    options = dict(adversarial=True, max_steps=12, val_every=5, sample_every=5, checkpoint_every=5)
    quantizer = ["model.quantizer.type=vq-ema", "model.quantizer.dead_code_threshold=0.5"]
    straight = tiny_run_file(tmp_path, name="straight12", **options)
    expected = train_records(train(load_run_file(straight, overrides=quantizer)).run_dir)

    legs = tiny_run_file(tmp_path, name="legs", **options)
    first = train(load_run_file(legs, overrides=[*quantizer, "train.max_steps=7"]))
    assert first.step == 7 and first.val_metrics  # validated at the end of the first leg
    resumed = train(
        load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=12"]), resume_dir=first.run_dir
    )
    assert resumed.step == 12
    got = train_records(first.run_dir)
    assert sorted(got) == list(range(1, 13))
    for step in range(8, 13):
        for term in ("loss", "rec_loss", "quantizer_loss", "g_loss", "d_loss", *LG_TERMS):
            assert got[step][term] == expected[step][term], (step, term)
    straight_val = [r for r in read_metrics(run_dirs(tmp_path, "straight12")[0]) if r["split"] == "val"]
    legs_val = {r["step"]: r for r in read_metrics(first.run_dir) if r["split"] == "val"}
    assert legs_val[12] == straight_val[-1]


def test_a_run_without_alignment_losses_encodes_no_caption_up_front(tmp_path, capsys):
    path = tiny_run_file(tmp_path, alignment=False, max_steps=1)
    text = dumps_toml(
        {**load_run_file(path).raw, "text_encoder": {"type": "tiny-text", "width": 16}}  # kept for the tasks' probes
    )
    path.write_text(text)
    train(load_run_file(path))
    assert "training captions once" not in capsys.readouterr().out
