"""Downstream runs: a model trained on the cached codes of a frozen tokenizer, through the common loop."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import tomli
from safetensors.torch import load_file

from lgvq_core import code_cache
from lgvq_core.config.describe import dumps_toml
from lgvq_core.errors import CheckpointError, ConfigError, NonFiniteLossError
from lgvq_core.plugins import hookimpl
from lgvq_core.registry import get_plugin_manager
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.checkpoint import load_checkpoint, resolve_checkpoint
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics


def downstream_file(tmp_path: Path, tokenizer_run: Path, name: str = "prior", **sections) -> Path:
    data = {
        "run": {"name": name, "seed": 5, "output_dir": str(tmp_path / "runs"), "log_every": 1, "progress": "off"},
        "tokenizer": {"run_dir": str(tokenizer_run)},
        "downstream": {"type": "tiny-prior", "text": True},
        "train": {
            "batch_size": 4,
            "max_steps": 6,
            "base_lr": 1e-3,
            "lr_scaling": "none",
            "val_every": 3,
            "checkpoint_every": 3,
        },
    }
    for key, value in sections.items():  # tables are merged, except [downstream], which is replaced
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and key != "downstream" else value
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps_toml(data))
    return path


def train_records(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir) if r["split"] == "train"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_downstream_run_trains_on_codes_and_records_its_tokenizer(tmp_path, tokenizer_run):
    tokenizer_weights = resolve_checkpoint(tokenizer_run, "best") / "model.safetensors"
    before = sha256(tokenizer_weights)
    result = train(load_run_file(downstream_file(tmp_path, tokenizer_run)))
    assert (result.step, result.stop_reason) == (6, "max_steps")
    records = train_records(result.run_dir)
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) and "bits_per_code" in r for r in records.values())
    val = [r for r in read_metrics(result.run_dir) if r["split"] == "val"]
    assert [r["step"] for r in val] == [3, 6] and all("bits_per_code" in r for r in val)

    resolved = tomli.loads((result.run_dir / "resolved.toml").read_text())
    assert resolved["tokenizer"]["run_dir"] == str(tokenizer_run.resolve())
    assert resolved["tokenizer"]["checkpoint"] == str(tokenizer_weights.parent.resolve())
    assert resolved["tokenizer"]["sha256"] == before
    assert resolved["data"]["type"] == "shapes"  # taken from the tokenizer run
    assert resolved["train"]["betas"] == [0.9, 0.95]  # the model's default [train] keys
    assert resolved["train"]["best_metric"] == "loss"

    saved = load_file(str(resolve_checkpoint(result.run_dir, "last") / "model.safetensors"))
    assert saved and all(name.startswith("downstream.") for name in saved)  # the tokenizer is never re-saved
    assert sha256(tokenizer_weights) == before


def test_freezing_the_tokenizer_builds_it_alone(tmp_path, tokenizer_run, component_builds):
    from collections import Counter

    from lgvq_core.runner.components import build_run

    build_run(load_run_file(downstream_file(tmp_path, tokenizer_run)))
    builds = Counter(component_builds)
    # the tokenizer (quantizer + backbone), the text encoder once, the run's own two splits and model:
    # none of the tokenizer run's datasets, alignment heads or discriminator
    assert dict(builds) == {
        ("quantizer", "$.model.quantizer"): 1,
        ("backbone", "$.model.backbone"): 1,
        ("text_encoder", "$.text_encoder"): 1,
        ("dataset", "$.data"): 2,
        ("downstream", "$.downstream"): 1,
    }


def test_the_codes_are_encoded_once_and_reused_by_later_runs(tmp_path, tokenizer_run, monkeypatch):
    train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="first", train={"max_steps": 1})))
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the image encoder ran although the codes are cached")

    monkeypatch.setattr(code_cache, "encode_split", refuse)
    result = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="second", train={"max_steps": 2})))
    assert result.step == 2 and calls == []


def test_flipped_codes_are_a_separate_cache_entry_with_both_views(tmp_path, tokenizer_run):
    from lgvq_core.code_cache import CodeCache
    from lgvq_core.text_feature_cache import cache_root

    before = set(CodeCache(cache_root() / "codes").root.glob("*.safetensors"))
    train(
        load_run_file(
            downstream_file(tmp_path, tokenizer_run, name="flip", codes={"flip": True}, train={"max_steps": 1})
        )
    )
    new = set(CodeCache(cache_root() / "codes").root.glob("*.safetensors")) - before
    assert len(new) == 2  # train and val
    for path in new:
        tensors = load_file(str(path))
        assert tensors["indices"].dtype.itemsize == 2  # int16 for a 32-code codebook
        assert tensors["indices_flipped"].shape == tensors["indices"].shape
        assert int(tensors["indices"].max()) < 32


def test_a_cache_file_with_codes_out_of_range_is_said_moved_aside_and_encoded_again(tmp_path, tokenizer_run, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from lgvq_core.code_cache import CodeCache
    from lgvq_core.text_feature_cache import cache_root

    first = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="a", train={"max_steps": 1})))
    sha = tomli.loads((first.run_dir / "resolved.toml").read_text())["tokenizer"]["sha256"]

    def train_split_file(path) -> bool:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
            return meta.get("sha256") == sha and meta.get("split") == "train" and "indices_flipped" not in handle.keys()

    (path,) = [p for p in CodeCache(cache_root() / "codes").root.glob("*.safetensors") if train_split_file(p)]
    tensors = load_file(str(path))
    tensors["indices"] = tensors["indices"] + 1000  # beyond the 32 codes
    save_file(tensors, str(path), metadata={"sha256": sha, "split": "train"})
    capsys.readouterr()
    result = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="b", train={"max_steps": 1})))
    out = capsys.readouterr().out
    assert result.step == 1 and f"codes: {path} does not hold this split's codes" in out and "outside 0..31" in out
    assert int(load_file(str(path))["indices"].max()) < 32 and path.with_name(path.name + ".bad").is_file()


def test_check_names_a_tokenizer_resolved_toml_whose_model_is_not_a_table(tmp_path, tokenizer_run, capsys):
    import shutil

    from lgvq_core.cli import main

    copy = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_run, copy)
    resolved = tomli.loads((copy / "resolved.toml").read_text())
    resolved["model"] = 5
    (copy / "resolved.toml").write_text(dumps_toml(resolved))
    assert main(["check", str(downstream_file(tmp_path, copy))]) == 2
    err = capsys.readouterr().err
    assert f"{copy / 'resolved.toml'}: [model] is int 5, not a table" in err and "Traceback" not in err


def test_a_downstream_run_resumes_exactly(tmp_path, tokenizer_run):
    straight = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="straight")))
    expected = train_records(straight.run_dir)
    first = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="resumed", train={"max_steps": 3})))
    resumed = train(
        load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=first.run_dir
    )
    assert resumed.step == 6
    got = train_records(first.run_dir)
    for step in (4, 5, 6):
        assert got[step]["loss"] == expected[step]["loss"], step


def check_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    return info.value.problems


def test_check_names_a_missing_tokenizer_run(tmp_path):
    path = downstream_file(tmp_path, tmp_path / "no-such-run")
    assert any(p.startswith("$.tokenizer.run_dir: no such run directory") for p in check_problems(path))
    assert not (tmp_path / "runs").exists()


def test_check_names_a_folder_that_is_not_a_run_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    problems = check_problems(downstream_file(tmp_path, tmp_path / "empty"))
    assert any("not a run directory" in p and "resolved.toml" in p for p in problems)


def test_check_names_a_tokenizer_run_without_the_checkpoint(tmp_path, tokenizer_run):
    problems = check_problems(downstream_file(tmp_path, tokenizer_run, tokenizer={"checkpoint": str(tmp_path)}))
    assert any(p.startswith("$.tokenizer.checkpoint:") and "not a checkpoint directory" in p for p in problems)


def test_check_refuses_a_model_vocabulary_that_does_not_fit_the_codebook(tmp_path, tokenizer_run):
    path = downstream_file(tmp_path, tokenizer_run, downstream={"codebook_size": 64})
    problems = check_problems(path)
    assert any(p.startswith("$.downstream.codebook_size: 64 does not fit") and "32 codes" in p for p in problems)


def test_check_refuses_the_tokenizer_speed_options_in_a_downstream_run(tmp_path, tokenizer_run):
    path = downstream_file(tmp_path, tokenizer_run, run={"channels_last": True, "compile": "default"})
    problems = check_problems(path)
    assert any(p.startswith("$.run.channels_last: applies to tokenizer runs only") for p in problems)
    assert any(p.startswith("$.run.compile: applies to tokenizer runs only") for p in problems)


def test_check_refuses_a_downstream_run_as_the_tokenizer(tmp_path, tokenizer_run):
    first = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="stage2", train={"max_steps": 1})))
    problems = check_problems(downstream_file(tmp_path, first.run_dir, name="stage3"))
    assert any("is not a tokenizer run" in p for p in problems)


def test_a_changed_tokenizer_checkpoint_is_refused_by_its_recorded_hash(tmp_path, tokenizer_run):
    path = downstream_file(tmp_path, tokenizer_run, tokenizer={"sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="differs from \\$.tokenizer.sha256"):
        train(load_run_file(path))


class _DivergesThenStops:
    """The update of step ``at`` uses lr 1e30 (huge but finite weights), then the run is asked to stop."""

    def __init__(self, at: int) -> None:
        self.at = at

    @hookimpl
    def lgvq_train_batch_end(self, run, metrics):
        if run.step == self.at - 1:
            for group in run.optimizers.model.param_groups:
                group["lr"] = 1e30
        if run.step == self.at:
            run.request_stop("test-stop")


def test_the_final_checkpoint_of_a_downstream_run_is_probed_on_validation_codes(tmp_path, tokenizer_run):
    path = downstream_file(
        tmp_path, tokenizer_run, name="diverges", train={"max_steps": 8, "checkpoint_every": 2, "val_every": 100}
    )
    manager = get_plugin_manager()
    manager.register(_DivergesThenStops(at=4), name="fault")
    try:
        with pytest.raises(NonFiniteLossError) as info:
            train(load_run_file(path))
    finally:
        manager.unregister(name="fault")
    error = info.value
    # no training loss follows step 4 and no validation ran: only the probe sees the diverged weights
    assert (error.step, error.what) == (4, "loss term (of the weights to save)"), str(error)
    (run_dir,) = list((tmp_path / "runs" / "diverges").iterdir())
    kept = resolve_checkpoint(run_dir, "last", log=pytest.fail)
    assert load_checkpoint(kept)[1]["step"] == 2
    assert f"The last good checkpoint is {kept} (step 2)" in str(error)
