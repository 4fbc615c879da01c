"""bench/device_suite.py's summary names the machine: lscpu's CPU model and nvidia-smi's GPUs (or why not)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_suite():
    sys.path.insert(0, str(BENCH))  # the suite imports its sibling harness by name
    try:
        spec = importlib.util.spec_from_file_location("device_suite", BENCH / "device_suite.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_the_summary_environment_records_lscpu_and_nvidia_smi():
    suite = load_suite()
    environment = suite.environment("cpu")
    if shutil.which("lscpu"):
        assert "Model name" in environment["lscpu"]
    else:
        assert environment["lscpu"].startswith("unavailable:")
    assert (
        environment["nvidia_smi"]
        if shutil.which("nvidia-smi")
        else environment["nvidia_smi"].startswith("unavailable:")
    )
    assert suite._command_output(["lgvq-no-such-command"]).startswith("unavailable: ")
