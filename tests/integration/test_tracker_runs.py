"""``[[loggers]]``: TensorBoard event files read back with TensorBoard's own reader, a real MLflow
server over HTTP queried for the run, resume without duplicates, and failing trackers that never
stop a run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_runner import _finish, _torchrun, run_dirs, tiny_run_file, train_records

from lgvq_core.config.describe import dumps_toml
from lgvq_core.loggers import STATE_FILE
from lgvq_core.plugins import hookimpl
from lgvq_core.registry import get_plugin_manager
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics

pytest.importorskip("tensorboard", reason="lgvq-loggers[tensorboard] is installed by requirements-dev.txt")
pytest.importorskip("mlflow", reason="lgvq-loggers[mlflow] is installed by requirements-dev.txt")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def logged_run_file(tmp_path: Path, name: str, loggers: list[dict], tasks: bool = False, **train_keys) -> Path:
    """The runner's tiny run (tiny-ae + vq + LG losses, 32 px) with ``[[loggers]]`` and, optionally, a task."""
    path = tiny_run_file(tmp_path, name=name, **train_keys)
    import tomllib

    data = tomllib.loads(path.read_text())
    data["loggers"] = loggers
    if tasks:
        data["tasks"] = [{"type": "reconstruction"}]
    path.write_text(dumps_toml(data))
    return path


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def steps_of(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


def logger_state(run_dir: Path) -> dict:
    return json.loads((run_dir / STATE_FILE).read_text())


# ------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------
def test_tensorboard_receives_every_metric_line_the_pictures_hparams_and_task_numbers(tmp_path):
    run_file = logged_run_file(tmp_path, "tb", [{"type": "tensorboard"}], tasks=True)
    run_dir = train(load_run_file(run_file)).run_dir
    accumulator = events(run_dir / "tensorboard")
    records = read_metrics(run_dir)
    train_lines = [r for r in records if r["split"] == "train"]
    val_lines = [r for r in records if r["split"] == "val"]
    # every train number of every line, at its step, with its value
    for name in ("loss", "rec_loss", "quantizer_loss", "lr"):
        scalars = accumulator.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == [r["step"] for r in train_lines]
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in train_lines], rel=1e-6)
    assert steps_of(accumulator, "val/psnr") == [r["step"] for r in val_lines] == [3, 6]
    assert accumulator.Scalars("val/psnr")[-1].value == pytest.approx(val_lines[-1]["psnr"], rel=1e-6)
    # the final task numbers at the step of the checkpoint they evaluated (best: step 3 or 6)
    evaluated = json.loads((run_dir / "eval" / "reconstruction.json").read_text())
    psnr = accumulator.Scalars("eval/reconstruction/psnr")
    assert [(s.step, s.value) for s in psnr] == [(evaluated["step"], pytest.approx(evaluated["metrics"]["psnr"]))]
    # the sample grids at their steps and the evaluation picture, as the PNG bytes on disk
    samples = accumulator.Images("samples")
    assert [i.step for i in samples] == [3, 6]
    assert samples[0].encoded_image_string == (run_dir / "samples" / "step-0000003.png").read_bytes()
    (picture,) = [t for t in accumulator.Tags()["images"] if t.startswith("eval/reconstruction/")]
    assert accumulator.Images(picture)[0].encoded_image_string == (run_dir / f"{picture}.png").read_bytes()
    # the resolved run file as the HParams dashboard's session
    content = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.hparams["model.quantizer.codebook_size"].number_value == 32
    assert session.hparams["model.backbone.type"].string_value == "tiny-ae"
    assert session.hparams["alignment.1.type"].string_value == "masked-text"
    assert session.hparams["train.max_steps"].number_value == 6
    end = accumulator.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
    assert plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info.status == 1  # STATUS_SUCCESS


class FailAtStep:
    """A hook implementation that raises in ``lgvq_train_batch_end`` at one step: a crash mid-run."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def lgvq_train_batch_end(self, run, metrics):
        if run.step == self.step:
            raise RuntimeError(f"injected crash at step {run.step}")


def crash_at(step: int, run_file: Path) -> Path:
    manager = get_plugin_manager()
    crash = FailAtStep(step)
    manager.register(crash)
    try:
        with pytest.raises(RuntimeError, match="injected crash"):
            train(load_run_file(run_file))
    finally:
        manager.unregister(crash)
    (run_dir,) = run_dirs(run_file.parent, run_file.stem)
    return run_dir


def test_a_resume_after_a_crash_continues_tensorboard_without_a_step_twice(tmp_path):
    """Steps 1-4 reached TensorBoard, the checkpoint is step 3: the resumed run re-runs step 4 and
    TensorBoard still holds each step once, with the value metrics.jsonl holds."""
    run_file = logged_run_file(tmp_path, "tbr", [{"type": "tensorboard"}], checkpoint_every=3)
    run_dir = crash_at(5, run_file)
    assert steps_of(events(run_dir / "tensorboard"), "train/loss") == [1, 2, 3, 4]
    assert logger_state(run_dir)["0-tensorboard"]["sent"]["train"] == 4
    train(load_run_file(run_dir / "resolved.toml"), resume_dir=run_dir)
    accumulator = events(run_dir / "tensorboard")
    assert steps_of(accumulator, "train/loss") == [1, 2, 3, 4, 5, 6]
    by_step = {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["split"] == "train"}
    assert [s.value for s in accumulator.Scalars("train/loss")] == pytest.approx([by_step[s] for s in range(1, 7)])
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per process


def test_a_tensorboard_writer_on_a_full_disk_is_reported_once_and_the_run_finishes_then_resume_catches_up(
    tmp_path, monkeypatch, capsys
):
    from lgvq_loggers import tensorboard_logger

    real = tensorboard_logger.TensorBoardLogger._event

    def full_disk_from_step_3(self, step, values):
        if step >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, step, values)

    monkeypatch.setattr(tensorboard_logger.TensorBoardLogger, "_event", full_disk_from_step_3)
    run_file = logged_run_file(tmp_path, "full", [{"type": "tensorboard"}], max_steps=4)
    result = train(load_run_file(run_file))
    assert result.step == 4 and result.stop_reason == "max_steps"
    out = capsys.readouterr()
    reports = [line for line in (out.out + out.err).splitlines() if "logger 'tensorboard'" in line]
    assert len(reports) == 1, reports
    assert "No space left on device" in reports[0] and "training goes on" in reports[0]
    assert "is writable and its disk has room" in reports[0] and "--resume" in reports[0]
    run_dir = result.run_dir
    assert [r["step"] for r in read_metrics(run_dir) if r["split"] == "train"] == [1, 2, 3, 4]  # nothing lost
    assert logger_state(run_dir)["0-tensorboard"]["sent"]["train"] == 2
    # the disk has room again: a resume sends the tracker steps 3-4 from metrics.jsonl, then 5-6
    monkeypatch.setattr(tensorboard_logger.TensorBoardLogger, "_event", real)
    train(load_run_file(run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=run_dir)
    assert steps_of(events(run_dir / "tensorboard"), "train/loss") == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------
# MLflow: a real server on a free loopback port
# ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` over HTTP (SQLite store, proxied artifacts), stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    command = [
        mlflow, "server",
        "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            log.close()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    log.close()


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """``{step: value}`` of a metric, every step logged once."""
    entries = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
    steps = [step for step, _ in entries]
    assert len(steps) == len(set(steps)), f"{key}: a step logged twice: {sorted(steps)}"
    return dict(entries)


def test_mlflow_server_receives_metrics_params_artifacts_and_task_numbers(tmp_path, mlflow_server):
    loggers = [{"type": "mlflow", "tracking_uri": mlflow_server, "experiment": "lgvq-test"}]
    run_dir = train(load_run_file(logged_run_file(tmp_path, "ml", loggers, tasks=True))).run_dir
    run_id = logger_state(run_dir)["0-mlflow"]["logger"]["run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "lgvq-test"
    assert run.data.params["model.quantizer.codebook_size"] == "32"
    assert run.data.params["alignment.0.type"] == "semantic-nce"
    assert run.data.tags["lgvq.run_dir"] == str(run_dir.resolve())
    lines = train_records(run_dir)
    assert history(client, run_id, "train/loss") == pytest.approx({s: r["loss"] for s, r in lines.items()})
    val = [r for r in read_metrics(run_dir) if r["split"] == "val"]
    assert history(client, run_id, "val/rec_loss") == pytest.approx({r["step"]: r["rec_loss"] for r in val})
    evaluated = json.loads((run_dir / "eval" / "reconstruction.json").read_text())
    expected = {evaluated["step"]: evaluated["metrics"]["psnr"]}
    assert history(client, run_id, "eval/reconstruction/psnr") == pytest.approx(expected)
    samples = sorted(a.path for a in client.list_artifacts(run_id, "samples"))
    assert samples == ["samples/step-0000003.png", "samples/step-0000006.png"]
    downloaded = client.download_artifacts(run_id, "samples/step-0000006.png", str(tmp_path))
    assert Path(downloaded).read_bytes() == (run_dir / "samples" / "step-0000006.png").read_bytes()
    assert client.list_artifacts(run_id, "eval/reconstruction")


def test_a_resumed_run_continues_the_same_mlflow_run_without_a_step_twice(tmp_path, mlflow_server):
    loggers = [{"type": "mlflow", "tracking_uri": mlflow_server, "experiment": "lgvq-resume"}]
    run_file = logged_run_file(tmp_path, "mlr", loggers, checkpoint_every=3)
    run_dir = crash_at(5, run_file)
    run_id = logger_state(run_dir)["0-mlflow"]["logger"]["run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(run_id).info.status == "FAILED"
    assert sorted(history(client, run_id, "train/loss")) == [1, 2, 3, 4]
    train(load_run_file(run_dir / "resolved.toml"), resume_dir=run_dir)
    assert logger_state(run_dir)["0-mlflow"]["logger"]["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["lgvq.resumed_at_step"] == "3"
    lines = train_records(run_dir)
    assert history(client, run_id, "train/loss") == pytest.approx({s: r["loss"] for s, r in lines.items()})
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_an_unreachable_mlflow_server_is_reported_once_and_the_run_finishes(tmp_path, capsys):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    loggers = [
        {"type": "mlflow", "tracking_uri": down, "request_retries": 0, "request_timeout": 2},
        {"type": "tensorboard"},
    ]
    started = time.monotonic()
    result = train(load_run_file(logged_run_file(tmp_path, "down", loggers, max_steps=4)))
    assert time.monotonic() - started < 60  # no minutes of retries
    assert result.step == 4 and result.stop_reason == "max_steps"
    out = capsys.readouterr()
    reports = [line for line in (out.out + out.err).splitlines() if "logger 'mlflow'" in line]
    assert len(reports) == 1 and "while starting" in reports[0] and down in reports[0]
    # the other logger and the run's own record are whole
    assert steps_of(events(result.run_dir / "tensorboard"), "train/loss") == [1, 2, 3, 4]
    assert [r["step"] for r in read_metrics(result.run_dir) if r["split"] == "train"] == [1, 2, 3, 4]


def test_the_default_mlflow_store_is_a_sqlite_file_in_the_output_folder(tmp_path):
    run_dir = train(load_run_file(logged_run_file(tmp_path, "local", [{"type": "mlflow"}], max_steps=2))).run_dir
    state = logger_state(run_dir)["0-mlflow"]["logger"]
    store = tmp_path / "runs" / "mlflow.db"
    assert state["tracking_uri"] == f"sqlite:///{store.resolve()}" and store.is_file()
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    assert sorted(history(client, state["run_id"], "train/loss")) == [1, 2]
    (artifact,) = client.list_artifacts(state["run_id"], "samples")
    assert (tmp_path / "runs" / "mlflow-artifacts").is_dir() and artifact.path == "samples/step-0000002.png"


# ------------------------------------------------------------------------------------------
# DDP: rank 0 alone logs
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_under_ddp_only_rank_0_writes_tensorboard_events(tmp_path):
    run_file = logged_run_file(
        tmp_path, "ddp", [{"type": "tensorboard"}], alignment=False, max_steps=3, batch_size=4, val_every=3
    )
    failure = _finish(_torchrun("--standalone", "--nproc_per_node", "2", run_file=run_file, cwd=tmp_path))
    assert not failure, failure
    (run_dir,) = run_dirs(tmp_path, "ddp")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert steps_of(events(run_dir / "tensorboard"), "train/loss") == [1, 2, 3]


def test_a_downstream_run_logs_to_tensorboard_like_a_tokenizer_run(tmp_path, tokenizer_run):
    from test_downstream_runs import downstream_file

    run_file = downstream_file(tmp_path, tokenizer_run, loggers=[{"type": "tensorboard"}])
    run_dir = train(load_run_file(run_file)).run_dir
    accumulator = events(run_dir / "tensorboard")
    lines = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    assert steps_of(accumulator, "train/loss") == [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    content = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.hparams["downstream.type"].string_value == "tiny-prior"
    assert session.hparams["tokenizer.run_dir"].string_value.endswith(tokenizer_run.name)
