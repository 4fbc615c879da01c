"""Run-file configuration: documented attrs classes, TOML loading and validation (no torch)."""

from lgvq_core.config.fields import in_range, non_negative, option, positive, probability
from lgvq_core.config.loader import LoadedRunFile, load_run_file, validate
from lgvq_core.config.problems import Problem
from lgvq_core.config.schema import Component, RunFile

__all__ = [
    "Component",
    "LoadedRunFile",
    "Problem",
    "RunFile",
    "in_range",
    "load_run_file",
    "non_negative",
    "option",
    "positive",
    "probability",
    "validate",
]
