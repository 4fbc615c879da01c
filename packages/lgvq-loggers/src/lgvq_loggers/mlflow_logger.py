"""``mlflow``: an lgvq run as an MLflow run, through :class:`mlflow.MlflowClient` (no global state).

- the resolved run file: the run's parameters (one per key, ``model.quantizer.codebook_size``);
- every ``metrics.jsonl`` line: metrics ``train/<name>`` / ``val/<name>`` at its step;
- the final task numbers: ``eval/<task>/<metric>``;
- pictures: artifacts at their place in the run directory (``samples/step-0000100.png``);
- tags: the run directory and lgvq's versions; the run ends FINISHED, KILLED or FAILED.

A resume re-opens the same MLflow run (its id is kept in the run directory's ``loggers.json``).
The tracking store is ``tracking_uri``; by default ``$MLFLOW_TRACKING_URI`` or a SQLite file shared
by all runs of ``run.output_dir``, whose artifacts go to ``<run.output_dir>/mlflow-artifacts``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from lgvq_core.api import LgvqError
from lgvq_loggers.registration import MLflowConfig

INSTALL = "pip install 'lgvq-loggers[mlflow]'"
#: MLflow's limits per log_batch request and per parameter.
MAX_METRICS, MAX_PARAMS, MAX_PARAM_VALUE, MAX_KEY = 1000, 100, 6000, 250
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")


def mlflow_key(name: str) -> str:
    """A metric or parameter name MLflow accepts (``recall@1`` -> ``recall_at_1``)."""
    return _BAD_KEY_CHARS.sub("_", name.replace("@", "_at_"))[:MAX_KEY]


def param_value(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    cut = " …(truncated)"
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - len(cut)] + cut


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def default_tracking_uri(output_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(output_dir) / 'mlflow.db').resolve()}"


class MLflowLogger:
    def __init__(self, config: MLflowConfig) -> None:
        try:
            import mlflow  # noqa: F401 - the dependency is checked when the logger is built
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise LgvqError(f'[[loggers]] type = "mlflow" needs the mlflow package ({exc}): {INSTALL}') from None
        self.config = config
        self._metric, self._param, self._client_cls = Metric, Param, MlflowClient
        self.client: Any = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.tracking_uri = config.tracking_uri
        self.advice = "Check that the MLflow tracking store is reachable."

    def _log_params(self, params: dict[str, str]) -> None:
        entries = [self._param(key, value) for key, value in params.items()]
        for chunk in _chunks(entries, MAX_PARAMS):
            self.client.log_batch(self.run_id, params=chunk)

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        entries = [self._metric(mlflow_key(k), float(v), stamp, int(step)) for k, v in metrics.items()]
        for chunk in _chunks(entries, MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)

    # -------------------------------------------------------------- Logger
    def start(self, run) -> dict[str, Any]:
        for name in ("mlflow", "alembic"):  # their INFO lines (store migrations) are not the run's log
            logging.getLogger(name).setLevel(logging.WARNING)
        # lgvq's bounds on a request to a server that does not answer (read by MLflow at each request)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(self.config.request_timeout)))
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.config.request_retries)
        previous = run.previous_state or {}
        self.run_dir = Path(run.run_dir)
        self.tracking_uri = (
            self.config.tracking_uri or previous.get("tracking_uri") or default_tracking_uri(run.output_dir)
        )
        self.advice = f"Check that the MLflow tracking store {self.tracking_uri} is reachable."
        self.client = self._client_cls(tracking_uri=self.tracking_uri)
        params = {mlflow_key(k): param_value(v) for k, v in run.hyperparameters.items()}
        if previous.get("run_id"):
            self.run_id = str(previous["run_id"])
            logged = self.client.get_run(self.run_id).data.params
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "lgvq.resumed_at_step", str(run.step))
            self._log_params({k: v for k, v in params.items() if k not in logged})
            for key, value in params.items():  # a parameter cannot change: a changed one is a tag
                if key in logged and logged[key] != value:
                    self.client.set_tag(self.run_id, f"lgvq.resumed.{key}"[:MAX_KEY], value)
        else:
            name = self.config.experiment or run.name
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                location = None
                if not self.tracking_uri.startswith(("http://", "https://", "databricks")):
                    location = (Path(run.output_dir) / "mlflow-artifacts").resolve().as_uri()
                experiment_id = self.client.create_experiment(name, artifact_location=location)
            created = self.client.create_run(
                experiment_id,
                run_name=self.config.run_name or Path(run.run_dir).name,
                tags={"lgvq.run_dir": str(Path(run.run_dir).resolve())},
            )
            self.run_id = created.info.run_id
            self._log_params(params)
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri}

    def log_metrics(self, metrics: dict[str, float], step: int, split: str) -> None:
        self._log_metrics({f"{split}/{key}": value for key, value in metrics.items()}, step)

    def log_picture(self, path: Path, name: str, step: int) -> None:
        if not self.config.pictures:
            return
        folder = Path(path).parent
        try:  # the picture's folder in the run directory: eval/code-gpt/step-0000040.png -> eval/code-gpt
            where = folder.relative_to(self.run_dir).as_posix() if self.run_dir is not None else folder.name
        except ValueError:
            where = folder.name
        self.client.log_artifact(self.run_id, str(path), artifact_path=where)

    def log_results(self, results: dict[str, float], step: int) -> None:
        self._log_metrics({f"eval/{key}": value for key, value in results.items()}, step)

    def finish(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def build(config: MLflowConfig, context: Any = None) -> MLflowLogger:
    return MLflowLogger(config)
