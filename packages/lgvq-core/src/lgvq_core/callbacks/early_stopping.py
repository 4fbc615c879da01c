"""``early-stopping``: stop a run whose validation metric stopped improving."""

from __future__ import annotations

import math

from lgvq_core.callbacks.config import EarlyStoppingConfig
from lgvq_core.plugins import hookimpl


class EarlyStopping:
    def __init__(self, config: EarlyStoppingConfig) -> None:
        self.config = config
        self.best = math.inf
        self.bad_validations = 0

    @hookimpl
    def lgvq_validation_end(self, run, metrics):
        value = metrics.get(self.config.metric)
        if value is None:
            return
        if value < self.best - self.config.min_delta:
            self.best = value
            self.bad_validations = 0
            return
        self.bad_validations += 1
        if self.bad_validations >= self.config.patience:
            run.log(
                f"early stopping: {self.config.metric} has not improved on {self.best:.4g} "
                f"for {self.bad_validations} validations"
            )
            run.request_stop("early-stopping")

    @hookimpl
    def lgvq_save_checkpoint(self, run, state):
        state["early-stopping"] = {"best": self.best, "bad_validations": self.bad_validations}

    @hookimpl
    def lgvq_load_checkpoint(self, run, state):
        saved = state.get("early-stopping")
        if saved:
            self.best = float(saved["best"])
            self.bad_validations = int(saved["bad_validations"])


def build(config: EarlyStoppingConfig, context=None) -> EarlyStopping:
    return EarlyStopping(config)
