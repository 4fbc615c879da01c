"""Spec records and options of the loggers (no torch, no tracker package at import)."""

from __future__ import annotations

from importlib.util import find_spec

import attrs

from lgvq_core.api import ComponentSpec, non_negative, option, positive


@attrs.define
class TensorBoardConfig:
    """Write TensorBoard event files: every metric line as scalars, pictures as images, the run file
    as hyperparameters (``tensorboard --logdir RUN_DIR/tensorboard``)."""

    log_dir: str = option(
        "", 'Folder of the event files; "" is RUN_DIR/tensorboard. A relative path is taken from the run directory.'
    )
    flush_secs: float = option(10.0, "Seconds between flushes of the event file.", positive)
    pictures: bool = option(True, "Also log the sample grids and evaluation pictures as images.")

    def machine_problems(self) -> list[str]:
        """What ``lgvq check`` reports on a machine without the tracker package (``lgvq run`` would stop)."""
        return _missing("tensorboard", "tensorboard")


@attrs.define
class MLflowConfig:
    """Log the run to an MLflow tracking store: metrics, the run file as parameters, pictures as artifacts."""

    tracking_uri: str = option(
        "",
        'Tracking URI: "http://host:5000" (a server), "sqlite:///path.db", a folder. "" is $MLFLOW_TRACKING_URI, '
        "else sqlite:///<run.output_dir>/mlflow.db (all runs of that folder in one store).",
    )
    experiment: str = option("", 'MLflow experiment name; "" is run.name.')
    run_name: str = option("", 'Name of the MLflow run; "" is the run directory\'s name.')
    pictures: bool = option(True, "Also upload the sample grids and evaluation pictures as artifacts.")
    request_timeout: float = option(
        10.0, "Seconds an HTTP request to a tracking server may take before the logger gives up.", positive
    )
    request_retries: int = option(
        1, "Retries of a failed HTTP request (MLflow's default of 7 with back-off waits minutes).", non_negative
    )

    def machine_problems(self) -> list[str]:
        """What ``lgvq check`` reports on a machine without the tracker package (``lgvq run`` would stop)."""
        return _missing("mlflow", "mlflow")


def _missing(module: str, extra: str) -> list[str]:
    if find_spec(module) is not None:
        return []
    return [f"the {module} package is not installed; `lgvq run` would stop: pip install 'lgvq-loggers[{extra}]'"]


LOGGERS = [
    ComponentSpec(
        name="tensorboard",
        summary="TensorBoard event files: scalars, images, hparams (needs lgvq-loggers[tensorboard])",
        config_cls=TensorBoardConfig,
        factory="lgvq_loggers.tensorboard_logger:build",
    ),
    ComponentSpec(
        name="mlflow",
        summary="an MLflow tracking store or server: metrics, params, artifacts (needs lgvq-loggers[mlflow])",
        config_cls=MLflowConfig,
        factory="lgvq_loggers.mlflow_logger:build",
    ),
]
