"""SIGINT/SIGTERM during training: the first asks for a clean stop, a second SIGINT aborts and says what stays."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from lgvq_core.runner import checkpoint as ckpt
from lgvq_core.runner.loop import SignalGuard


def fake_run(run_dir):
    said = []
    run = SimpleNamespace(run_dir=run_dir, stop_reason=None, stop_signal=None, log=said.append)
    run.request_stop = lambda reason: setattr(run, "stop_reason", reason)
    return run, said


def test_a_second_sigint_aborts_and_names_the_checkpoint_that_stays(tmp_path):
    saved = ckpt.save_checkpoint(tmp_path / "checkpoints", 7, {"tokenizer.w": torch.ones(2)}, {}, ["last"])
    run, said = fake_run(tmp_path)
    guard = SignalGuard(run)
    guard._handle(signal.SIGINT, None)
    assert run.stop_reason == "signal" and run.stop_signal == signal.SIGINT
    assert said[-1] == "received SIGINT: saving checkpoints/last and stopping (a second SIGINT stops without saving it)"
    with pytest.raises(KeyboardInterrupt):
        guard._handle(signal.SIGINT, None)
    assert said[-1] == (
        f"second SIGINT: stopping without saving a new checkpoint; checkpoints/last still names the one saved "
        f"earlier ({saved.name})"
    )


def test_a_second_sigint_before_any_checkpoint_says_none_was_saved(tmp_path):
    run, said = fake_run(tmp_path)
    guard = SignalGuard(run)
    guard._handle(signal.SIGTERM, None)
    assert said[-1] == "received SIGTERM: saving checkpoints/last and stopping"
    with pytest.raises(KeyboardInterrupt):
        guard._handle(signal.SIGINT, None)
    assert said[-1].endswith("no checkpoint was saved yet")
