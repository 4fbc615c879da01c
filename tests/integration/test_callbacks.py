"""Run-file callbacks: registered like plugins before a resume restores their state."""

from __future__ import annotations

import json

import attrs
import pytest
import tomli
from test_runner import tiny_run_file, train_records

from lgvq_core.config.describe import dumps_toml
from lgvq_core.errors import LgvqError
from lgvq_core.plugins import hookimpl
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.checkpoint import resolve_checkpoint
from lgvq_core.runner.loop import train
from lgvq_core.specs import ComponentSpec


def early_stopping_run(tmp_path, name: str, **train_options):
    """Every validation after the first counts as "no improvement": patience 3 stops at step 4."""
    path = tiny_run_file(tmp_path, name=name, alignment=False, val_every=1, **train_options)
    data = tomli.loads(path.read_text())
    data["callbacks"] = [{"type": "early-stopping", "metric": "rec_loss", "patience": 3, "min_delta": 1e9}]
    path.write_text(dumps_toml(data))
    return path


def test_early_stopping_stops_after_patience_validations_without_improvement(tmp_path):
    result = train(load_run_file(early_stopping_run(tmp_path, "straight", max_steps=10)))
    assert (result.step, result.stop_reason) == (4, "early-stopping")


def test_early_stopping_state_survives_a_resume(tmp_path):
    path = early_stopping_run(tmp_path, "resumed", max_steps=10)
    first = train(load_run_file(path, overrides=["train.max_steps=3"]))
    assert first.step == 3  # two validations without improvement so far
    resumed = train(
        load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=10"]), resume_dir=first.run_dir
    )
    # a callback registered after the restore would start counting again and stop at step 6
    assert (resumed.step, resumed.stop_reason) == (4, "early-stopping")


def test_an_early_stopped_run_is_evaluated_on_the_checkpoint_lgvq_eval_uses(tmp_path):
    path = early_stopping_run(tmp_path, "evaluated", max_steps=10)
    data = tomli.loads(path.read_text())
    data["tasks"] = [{"type": "reconstruction", "metrics": ["psnr", "usage"]}]
    path.write_text(dumps_toml(data))
    result = train(load_run_file(path))
    assert result.stop_reason == "early-stopping"
    evaluated = json.loads((result.run_dir / "eval" / "reconstruction.json").read_text())
    best = resolve_checkpoint(result.run_dir, "best")
    assert best.name.startswith("step-0000001-")  # min_delta 1e9: only the first validation improved
    assert evaluated["step"] == 1 != result.step


@attrs.define
class NoOptions:
    """No options."""


class MisspelledCallback:
    @hookimpl
    def lgvq_validation_ends(self, run, metrics):  # the hook is lgvq_validation_end
        raise AssertionError("never called")


def build_misspelled(config, context=None):
    return MisspelledCallback()


class MisspelledPlugin:
    @hookimpl
    def lgvq_callbacks(self):
        return [
            ComponentSpec(
                name="misspelled",
                summary="a callback whose hook name is wrong",
                config_cls=NoOptions,
                factory="test_callbacks:build_misspelled",
            )
        ]


def test_a_callback_with_a_misspelled_hook_fails_with_a_did_you_mean(tmp_path, make_plugin_manager):
    make_plugin_manager(["core", "testing"], plugins={"misspelled-plugin": MisspelledPlugin()})
    path = tiny_run_file(tmp_path, alignment=False, max_steps=2)
    data = tomli.loads(path.read_text())
    data["callbacks"] = [{"type": "misspelled"}]
    path.write_text(dumps_toml(data))
    with pytest.raises(LgvqError, match=r"\$\.callbacks\[0\].*lgvq_validation_ends.*did you mean lgvq_validation_end"):
        train(load_run_file(path))


def test_callbacks_are_unregistered_when_the_run_ends(tmp_path):
    from lgvq_core.registry import get_plugin_manager

    path = early_stopping_run(tmp_path, "once", max_steps=2)
    before = {name for name, _ in get_plugin_manager().list_name_plugin()}
    result = train(load_run_file(path))
    assert sorted(train_records(result.run_dir)) == [1, 2]
    assert {name for name, _ in get_plugin_manager().list_name_plugin()} == before
