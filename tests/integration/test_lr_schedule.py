"""Learning-rate warm-up and cosine decay: the formula, what a run logs, and an exact resume."""

from __future__ import annotations

import math

import pytest
from test_runner import tiny_run_file, train_records

from lgvq_core.config.schema import TrainSection
from lgvq_core.errors import ConfigError
from lgvq_core.plugins import hookimpl
from lgvq_core.registry import get_plugin_manager
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.runner.optim import lr_factor


def test_the_official_schedule_is_constant():
    train_section = TrainSection(max_steps=10)
    assert [lr_factor(train_section, s) for s in range(10)] == [1.0] * 10


def test_warm_up_rises_linearly_to_the_full_rate_then_stays():
    train_section = TrainSection(max_steps=10, warmup_steps=4)
    assert [lr_factor(train_section, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_goes_from_one_to_the_final_fraction_after_warm_up():
    train_section = TrainSection(max_steps=12, warmup_steps=2, lr_schedule="cosine", final_lr_fraction=0.2)
    # after warm-up, progress p = (s - 2) / 10 and factor = 0.2 + 0.8 * (1 + cos(pi p)) / 2
    assert lr_factor(train_section, 2) == pytest.approx(1.0)
    assert lr_factor(train_section, 7) == pytest.approx(0.2 + 0.8 * 0.5)  # p = 0.5: halfway down
    assert lr_factor(train_section, 4) == pytest.approx(0.2 + 0.4 * (1 + math.cos(math.pi * 0.2)))
    assert lr_factor(train_section, 12) == pytest.approx(0.2)
    assert lr_factor(train_section, 50) == pytest.approx(0.2)  # an extended run stays at the floor


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [
        (["train.warmup_steps=-1"], "$.train.warmup_steps", "must be >= 0"),
        (["train.final_lr_fraction=1.5"], "$.train.final_lr_fraction", "must be in [0, 1]"),
        (["train.lr_schedule=linear"], "$.train.lr_schedule", "must be one of"),
    ],
)
def test_bad_schedule_keys_are_config_errors_naming_the_key(tmp_path, overrides, path, message):
    with pytest.raises(ConfigError) as info:
        load_run_file(tiny_run_file(tmp_path, alignment=False), overrides=overrides)
    assert any(line.startswith(path) and message in line for line in str(info.value).splitlines()), str(info.value)


def test_a_warm_up_as_long_as_the_run_is_a_warning_not_an_error(tmp_path):
    loaded = load_run_file(tiny_run_file(tmp_path, alignment=False), overrides=["train.warmup_steps=6"])
    (warning,) = [w for w in loaded.warnings if "warmup_steps" in str(w)]
    assert str(warning).startswith("$.train.warmup_steps") and "lower warmup_steps" in str(warning)


def test_a_run_logs_the_scheduled_learning_rate_of_each_step(tmp_path):
    path = tiny_run_file(tmp_path, alignment=False, warmup_steps=2, lr_schedule="cosine", final_lr_fraction=0.0)
    records = train_records(train(load_run_file(path)).run_dir)
    # steps 1..6 use the factors of 0-based steps 0..5: warm-up 0.5, 1, then the cosine over the
    # remaining 4 steps from progress 0 (its top) in quarters
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * p / 4)) for p in range(4)]
    assert [records[s]["lr"] for s in range(1, 7)] == pytest.approx([1e-3 * f for f in expected])


class _StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def lgvq_train_batch_end(self, run, metrics):
        if run.step == self.step:
            run.request_stop("test-stop")


def test_a_run_stopped_mid_schedule_resumes_exactly(tmp_path):
    schedule = {"warmup_steps": 2, "lr_schedule": "cosine", "final_lr_fraction": 0.1}
    straight = train(load_run_file(tiny_run_file(tmp_path, name="straight", adversarial=True, **schedule)))
    expected = train_records(straight.run_dir)

    manager = get_plugin_manager()
    manager.register(_StopAt(3), name="stop-at-3")
    try:
        first = train(load_run_file(tiny_run_file(tmp_path, name="resumed", adversarial=True, **schedule)))
    finally:
        manager.unregister(name="stop-at-3")
    assert first.step == 3
    resumed = train(load_run_file(first.run_dir / "resolved.toml"), resume_dir=first.run_dir)
    got = train_records(resumed.run_dir)
    for step in (4, 5, 6):
        for term in ("loss", "rec_loss", "quantizer_loss", "lr"):
            assert got[step][term] == expected[step][term], (step, term)
