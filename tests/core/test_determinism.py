"""``run.deterministic``: torch's deterministic switches, and runs that repeat bit for bit."""

from __future__ import annotations

import pytest
import torch

from lgvq_core.run_file import load_run_file
from lgvq_core.runner.determinism import CUBLAS_WORKSPACE, apply_determinism
from lgvq_core.testing.fixtures import write_run_file


@pytest.fixture
def restore_torch_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_deterministic_mode_sets_the_torch_flags_and_off_restores_the_defaults(restore_torch_flags, monkeypatch):
    import os

    torch.backends.cudnn.benchmark = True
    apply_determinism(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # an op without such a kernel warns, names itself
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE

    apply_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_a_users_cublas_setting_is_kept(restore_torch_flags, monkeypatch):
    import os

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    apply_determinism(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_two_runs_of_one_file_on_one_machine_repeat_bit_for_bit(
    plugin_manager, tiny_run_config, tmp_path, restore_torch_flags
):
    from lgvq_core.runner.loop import train
    from lgvq_core.runner.rundir import read_metrics

    tiny_run_config["run"]["deterministic"] = True
    path = write_run_file(tiny_run_config, tmp_path / "repeat.toml")
    apply_determinism(True)
    first = train(load_run_file(path))
    second = train(load_run_file(path))
    assert first.run_dir != second.run_dir

    def numbers(run_dir):  # every logged number but the clock
        return [
            {k: v for k, v in r.items() if k != "elapsed_s" and "per_second" not in k} for r in read_metrics(run_dir)
        ]

    assert len(numbers(first.run_dir)) == 3 and numbers(first.run_dir) == numbers(second.run_dir)
