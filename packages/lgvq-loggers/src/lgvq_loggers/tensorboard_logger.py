"""``tensorboard``: an lgvq run as TensorBoard event files, written with the tensorboard package's
own event writer (no TensorFlow, no torch).

- every ``metrics.jsonl`` line: one scalar per number, tagged ``train/<name>`` or ``val/<name>``;
- the final task numbers: ``eval/<task>/<metric>`` at the last step;
- pictures: the PNG bytes as they are on disk, tagged with their place in the run directory
  (``samples``, ``eval/reconstruction/grid``) at their step;
- the resolved run file: the HParams dashboard's session (one hyperparameter per key).

A resumed run appends a new event file to the same folder; the runner sends no step twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lgvq_core.api import LgvqError
from lgvq_loggers.registration import TensorBoardConfig

INSTALL = "pip install 'lgvq-loggers[tensorboard]'"


def _modules():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        raise LgvqError(f'[[loggers]] type = "tensorboard" needs the tensorboard package ({exc}): {INSTALL}') from None
    return event_pb2, summary_pb2, metadata, plugin_data_pb2, api_pb2, EventFileWriter


def png_size(data: bytes) -> tuple[int, int]:
    """Height and width from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return height, width


class TensorBoardLogger:
    def __init__(self, config: TensorBoardConfig) -> None:
        self.config = config
        (
            self.event_pb2,
            self.summary_pb2,
            self.metadata,
            self.plugin_data_pb2,
            self.api_pb2,
            self._writer_cls,
        ) = _modules()
        self.writer: Any = None
        self.log_dir: Path | None = None
        self.advice = "Check that the folder of the event files is writable and the disk has room."

    # -------------------------------------------------------------- events
    def _event(self, step: int, values: list[Any]) -> None:
        summary = self.summary_pb2.Summary(value=values)
        self.writer.add_event(self.event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _hparams_event(self, tag: str, **info: Any) -> None:
        """A session record of the HParams dashboard (its plugin data in the summary's metadata)."""
        data = self.plugin_data_pb2.HParamsPluginData(**info)
        value = self.summary_pb2.Summary.Value(
            tag=tag, metadata=self.metadata.create_summary_metadata(data), tensor=self.metadata.NULL_TENSOR
        )
        self._event(0, [value])

    def _scalar(self, tag: str, value: float) -> Any:
        return self.summary_pb2.Summary.Value(tag=tag, simple_value=float(value))

    # -------------------------------------------------------------- Logger
    def start(self, run) -> dict[str, Any]:
        log_dir = Path(self.config.log_dir) if self.config.log_dir else Path("tensorboard")
        if not log_dir.is_absolute():
            log_dir = run.run_dir / log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.writer = self._writer_cls(str(log_dir), flush_secs=self.config.flush_secs)
        self.advice = f"Check that {log_dir} is writable and its disk has room."
        self._hparams(run.hyperparameters, run.name, resumed=run.previous_state is not None)
        self.writer.flush()
        return {"log_dir": str(log_dir)}

    def _hparams(self, hyperparameters: dict[str, Any], name: str, resumed: bool) -> None:
        info = self.plugin_data_pb2.SessionStartInfo(group_name=name, start_time_secs=time.time())
        for key, value in hyperparameters.items():
            if isinstance(value, bool):
                info.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[key].number_value = float(value)
            else:
                info.hparams[key].string_value = str(value)
        self._hparams_event(self.metadata.SESSION_START_INFO_TAG, session_start_info=info)

    def log_metrics(self, metrics: dict[str, float], step: int, split: str) -> None:
        self._event(step, [self._scalar(f"{split}/{key}", value) for key, value in metrics.items()])

    def log_picture(self, path: Path, name: str, step: int) -> None:
        if not self.config.pictures:
            return
        data = Path(path).read_bytes()
        height, width = png_size(data)
        image = self.summary_pb2.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        self._event(step, [self.summary_pb2.Summary.Value(tag=name, image=image)])
        self.writer.flush()

    def log_results(self, results: dict[str, float], step: int) -> None:
        self._event(step, [self._scalar(f"eval/{key}", value) for key, value in results.items()])
        self.writer.flush()

    def finish(self, status: str) -> None:
        if self.writer is None:
            return
        end = self.plugin_data_pb2.SessionEndInfo(
            status=self.api_pb2.Status.Value(
                {"FINISHED": "STATUS_SUCCESS", "KILLED": "STATUS_ABORTED"}.get(status, "STATUS_FAILURE")
            ),
            end_time_secs=time.time(),
        )
        self._hparams_event(self.metadata.SESSION_END_INFO_TAG, session_end_info=end)
        self.writer.close()
        self.writer = None


def build(config: TensorBoardConfig, context: Any = None) -> TensorBoardLogger:
    return TensorBoardLogger(config)
