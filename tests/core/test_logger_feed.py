"""The loggers' feed (lgvq_core.loggers) with recording loggers: what each receives, a failing one
reported once and switched off, progress kept across a restart; the lgvq-loggers package's helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lgvq_core.loggers import (
    STATE_FILE,
    Logger,
    LoggerRun,
    RunLoggers,
    flatten_config,
    flatten_results,
    picture_name,
)


class Recorder:
    """A logger that records every call; ``fail_on`` names a method that raises."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail_on = fail_on
        self.advice = "Do the recorder's thing."

    def _maybe_fail(self, method: str) -> None:
        if method == self.fail_on:
            raise ConnectionError("tracker is down")

    def start(self, run):
        self.calls.append(("start", run.step, run.previous_state))
        self._maybe_fail("start")
        return {"id": "tracker-run-1"}

    def log_metrics(self, metrics, step, split):
        self._maybe_fail("log_metrics")
        self.calls.append(("metrics", split, step, metrics))

    def log_picture(self, path, name, step):
        self._maybe_fail("log_picture")
        self.calls.append(("picture", name, step, Path(path).name))

    def log_results(self, results, step):
        self.calls.append(("results", step, results))

    def finish(self, status):
        self.calls.append(("finish", status))


def start_info(run_dir: Path, step: int = 0) -> LoggerRun:
    return LoggerRun(
        run_dir=run_dir,
        name="tiny",
        output_dir=run_dir.parent,
        hyperparameters={"a.b": 1},
        step=step,
        previous_state=None,
    )


def test_a_recorder_satisfies_the_logger_protocol():
    assert isinstance(Recorder(), Logger)


def test_flatten_config_by_hand():
    config = {
        "model": {"backbone": {"type": "vqgan", "ch_mult": [1, 2]}, "quantizer": None},
        "alignment": [{"type": "semantic-nce", "weight": 0.1}, {"type": "relation", "weight": 1.0}],
        "train": {"max_steps": 10, "ema": True, "betas": []},
    }
    assert flatten_config(config) == {
        "model.backbone.type": "vqgan",
        "model.backbone.ch_mult": "[1, 2]",
        "model.quantizer": "none",
        "alignment.0.type": "semantic-nce",
        "alignment.0.weight": 0.1,
        "alignment.1.type": "relation",
        "alignment.1.weight": 1.0,
        "train.max_steps": 10,
        "train.ema": True,
        "train.betas": "[]",
    }


def test_flatten_results_keeps_finite_numbers_only():
    results = {
        "reconstruction": {"psnr": 27.5, "fid": float("nan"), "note": "x", "per_class": {"a": 1, "b": True}},
        "masked-words": {"refused": "needs a text encoder"},
    }
    assert flatten_results(results) == {"reconstruction/psnr": 27.5, "reconstruction/per_class/a": 1.0}


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("samples/step-0000100.png", ("samples", 100)),
        ("eval/code-gpt/step-0000040.png", ("eval/code-gpt", 40)),
        ("eval/reconstruction/grid.png", ("eval/reconstruction/grid", 7)),
    ],
)
def test_picture_names_and_steps(relative, expected):
    assert picture_name(Path(relative), 7) == expected


def test_each_logger_gets_every_line_picture_and_result_then_finishes(tmp_path):
    recorder = Recorder()
    loggers = RunLoggers([("recorder", recorder)], tmp_path, log=print)
    loggers.start(start_info(tmp_path), [])
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "step-0000002.png").write_bytes(b"png")
    loggers.metrics({"step": 1, "split": "train", "loss": 1.5, "lr": 0.1, "bad": float("inf"), "flag": True})
    loggers.metrics({"step": 2, "split": "val", "psnr": 20.0})
    loggers.pictures()
    loggers.pictures()  # a picture is sent once
    loggers.results({"reconstruction": {"psnr": 21.0}}, 2)
    loggers.finish("FINISHED")
    assert recorder.calls == [
        ("start", 0, None),
        ("metrics", "train", 1, {"loss": 1.5, "lr": 0.1}),
        ("metrics", "val", 2, {"psnr": 20.0}),
        ("picture", "samples", 2, "step-0000002.png"),
        ("results", 2, {"reconstruction/psnr": 21.0}),
        ("finish", "FINISHED"),
    ]
    state = json.loads((tmp_path / STATE_FILE).read_text())["0-recorder"]
    assert state["logger"] == {"id": "tracker-run-1"}
    assert state["sent"] == {"train": 1, "val": 2} and state["pictures"] == ["samples/step-0000002.png"]


def test_a_failing_logger_is_reported_once_switched_off_and_the_others_go_on(tmp_path):
    said: list[str] = []
    broken, fine = Recorder(fail_on="log_metrics"), Recorder()
    loggers = RunLoggers([("broken", broken), ("fine", fine)], tmp_path, log=said.append)
    loggers.start(start_info(tmp_path), [])
    for step in (1, 2, 3):
        loggers.metrics({"step": step, "split": "train", "loss": float(step)})
    loggers.finish("FINISHED")
    assert len(said) == 1
    assert said[0].startswith(
        "warning: logger 'broken' ([[loggers]] #0) failed while logging the train metrics at step 1"
    )
    assert "ConnectionError: tracker is down" in said[0] and "Do the recorder's thing." in said[0]
    assert [c[2] for c in fine.calls if c[0] == "metrics"] == [1, 2, 3]
    assert ("finish", "FINISHED") not in broken.calls  # switched off: not called again
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert "train" not in state["0-broken"]["sent"] and state["1-fine"]["sent"]["train"] == 3


def test_a_logger_that_cannot_start_gets_nothing_else(tmp_path):
    said: list[str] = []
    broken = Recorder(fail_on="start")
    loggers = RunLoggers([("broken", broken)], tmp_path, log=said.append)
    loggers.start(start_info(tmp_path), [])
    loggers.metrics({"step": 1, "split": "train", "loss": 1.0})
    loggers.finish("FINISHED")
    assert broken.calls == [("start", 0, None)] and "while starting at step 0" in said[0]


def test_a_restart_hands_back_the_state_skips_what_was_sent_and_sends_what_was_missed(tmp_path):
    first = Recorder()
    loggers = RunLoggers([("recorder", first)], tmp_path, log=print)
    loggers.start(start_info(tmp_path), [])
    for step in (1, 2):
        loggers.metrics({"step": step, "split": "train", "loss": float(step)})
    # the process dies; metrics.jsonl (cut back to the checkpoint at step 3) holds 1-3
    records = [{"step": s, "split": "train", "loss": float(s)} for s in (1, 2, 3)]
    second = Recorder()
    again = RunLoggers([("recorder", second)], tmp_path, log=print)
    again.start(start_info(tmp_path, step=3), records)
    again.metrics({"step": 4, "split": "train", "loss": 4.0})
    assert second.calls[0] == ("start", 3, {"id": "tracker-run-1"})
    assert [c[2] for c in second.calls if c[0] == "metrics"] == [3, 4]  # 1-2 were sent; 3 was missed


def test_another_logger_at_the_same_place_starts_afresh(tmp_path):
    RunLoggers([("recorder", Recorder())], tmp_path, log=print).start(start_info(tmp_path), [])
    other = Recorder()
    RunLoggers([("other", other)], tmp_path, log=print).start(start_info(tmp_path), [])
    assert other.calls == [("start", 0, None)]


def test_mlflow_keys_and_png_size():
    pytest.importorskip("lgvq_loggers")
    from lgvq_loggers.mlflow_logger import mlflow_key, param_value
    from lgvq_loggers.tensorboard_logger import png_size

    assert mlflow_key("retrieval/recall@1") == "retrieval/recall_at_1"
    assert mlflow_key("a:b(c)") == "a_b_c_"
    assert param_value(True) == "true" and len(param_value("x" * 7000)) == 6000
    header = (
        b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + (40).to_bytes(4, "big") + (30).to_bytes(4, "big")
    )
    assert png_size(header + b"\x08\x02\x00\x00\x00") == (30, 40)
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + b"\x00" * 20)


def logger_run_file(tmp_path: Path, logger: str) -> Path:
    """A one-step tiny-ae run file with one ``[[loggers]]`` table."""
    run_file = tmp_path / "run.toml"
    run_file.write_text(
        f"""
[run]
name = "hint"
output_dir = "{tmp_path / "runs"}"
progress = "off"
[model.backbone]
type = "tiny-ae"
hidden = 8
[model.quantizer]
type = "vq"
codebook_size = 8
dim = 8
[data]
type = "shapes"
image_size = 32
num_train = 8
num_val = 4
[train]
batch_size = 4
max_steps = 1
[[loggers]]
type = "{logger}"
"""
    )
    return run_file


@pytest.mark.parametrize(("logger", "package"), [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_tracker_package_is_an_install_hint_before_anything_is_written(tmp_path, logger, package):
    """With the package unimportable, `lgvq run` stops before the run directory exists, naming the extra."""
    pytest.importorskip("lgvq_loggers")
    run_file = logger_run_file(tmp_path, logger)
    script = (
        f"import sys; sys.modules[{package!r}] = None\n"
        "from lgvq_core.cli import main\n"
        f"sys.exit(main(['run', {str(run_file)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert f"pip install 'lgvq-loggers[{logger}]'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_lgvq_list_logger_names_both():
    pytest.importorskip("lgvq_loggers")
    out = subprocess.run([sys.executable, "-m", "lgvq_core.cli", "list", "logger"], capture_output=True, text=True)
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["mlflow", "tensorboard"]


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_both_loggers_keep_the_logger_contract(name, tmp_path, monkeypatch):
    pytest.importorskip("lgvq_loggers")
    pytest.importorskip(name)
    from lgvq_core.loggers import check_logger
    from lgvq_core.registry import get_registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the contract's own temporary store
    check_logger(get_registry().build("logger", {"type": name}))


def test_the_logger_contract_refuses_a_wrong_method_and_unjsonable_state():
    from lgvq_core.contracts import ContractError
    from lgvq_core.loggers import check_logger

    class NoFinish(Recorder):
        finish = None

    class WrongMetrics(Recorder):
        def log_metrics(self, metrics):  # the runner hands (metrics, step, split)
            pass

    class OpaqueState(Recorder):
        def start(self, run):
            return {"client": object()}

    with pytest.raises(ContractError, match=r"a logger must have finish\(status\)"):
        check_logger(NoFinish())
    with pytest.raises(ContractError, match=r"log_metrics must accept \(metrics, step, split\)"):
        check_logger(WrongMetrics())
    with pytest.raises(ContractError, match="JSON-able state"):
        check_logger(OpaqueState())
    check_logger(Recorder())


def test_the_importers_and_exporters_keep_their_contracts():
    pytest.importorskip("lgvq_backbones")
    from lgvq_core.contracts import ContractError
    from lgvq_core.interop.exporting import check_exporter
    from lgvq_core.interop.records import check_importer
    from lgvq_core.registry import get_registry

    registry = get_registry()
    for name in registry.list_components("importer"):
        check_importer(registry.build("importer", {"type": name}))
    for name in registry.list_components("exporter"):
        if name == "diffusers":
            pytest.importorskip("diffusers")
        check_exporter(registry.build("exporter", {"type": name}))
    with pytest.raises(ContractError, match=r"an exporter must have export\(source, out_dir, log\)"):
        check_exporter(type("Half", (), {"check": lambda self, config: None})())


@pytest.mark.parametrize("logger", ["mlflow", "tensorboard"])
def test_lgvq_check_names_a_missing_tracker_package(tmp_path, logger, monkeypatch, lgvq_cli):
    pytest.importorskip("lgvq_loggers")
    from lgvq_loggers import registration

    run_file = logger_run_file(tmp_path, logger)
    assert lgvq_cli("check", str(run_file)).code == 0  # installed here
    real = registration.find_spec
    monkeypatch.setattr(registration, "find_spec", lambda name: None if name == logger else real(name))
    result = lgvq_cli("check", str(run_file))
    assert result.code == 2
    assert f"$.loggers[0] ({logger}): the {logger} package is not installed" in result.err
    assert f"pip install 'lgvq-loggers[{logger}]'" in result.err


def test_mlflow_artifacts_keep_their_place_in_the_run_directory(tmp_path, monkeypatch):
    """A step-named picture of a task (eval/<task>/step-N.png) lands in eval/<task>/, not beside other tasks'."""
    pytest.importorskip("lgvq_loggers")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from lgvq_core.loggers import _PIXEL
    from lgvq_core.registry import get_registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "tiny" / "run"
    pictures = [run_dir / "eval" / "code-gpt" / "step-0000040.png", run_dir / "eval" / "vqa" / "step-0000040.png"]
    pictures.append(run_dir / "samples" / "step-0000002.png")
    for picture in pictures:
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_bytes(_PIXEL)
    logger = get_registry().build("logger", {"type": "mlflow"})
    loggers = RunLoggers([("mlflow", logger)], run_dir, log=print)
    loggers.start(start_info(run_dir), [])  # the pictures already there are sent at start
    loggers.finish("FINISHED")
    client = MlflowClient(tracking_uri=logger.tracking_uri)
    found = sorted(
        item.path
        for folder in ("eval/code-gpt", "eval/vqa", "samples")
        for item in client.list_artifacts(logger.run_id, folder)
    )
    assert found == ["eval/code-gpt/step-0000040.png", "eval/vqa/step-0000040.png", "samples/step-0000002.png"]


def test_a_full_disk_under_loggers_json_is_reported_once_and_the_loggers_go_on(tmp_path, monkeypatch):
    import errno

    from lgvq_core import loggers as feed

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feed, "write_json_atomic", full)
    said: list[str] = []
    recorder = Recorder()
    loggers = RunLoggers([("recorder", recorder)], tmp_path, log=said.append)
    loggers.start(start_info(tmp_path), [])
    for step in (1, 2):
        loggers.metrics({"step": step, "split": "train", "loss": 1.0})
    loggers.finish("FINISHED")
    assert [c[2] for c in recorder.calls if c[0] == "metrics"] == [1, 2] and ("finish", "FINISHED") in recorder.calls
    assert len(said) == 1 and "could not record the loggers' progress in loggers.json" in said[0]
    assert not (tmp_path / "loggers.json").exists()
