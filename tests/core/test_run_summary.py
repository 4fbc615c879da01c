"""The lines `lgvq run` prints at the end of a run."""

from __future__ import annotations

import os
from pathlib import Path

from lgvq_core.runner.reporting import RunResult, describe_result


def result(val: dict[str, float]) -> RunResult:
    return RunResult(Path("runs/x/1"), 10, "max_steps", {"loss": 1.0}, 100.0, 2.0, val_metrics=val)


def test_a_tokenizer_run_shows_its_validation_quality_numbers():
    text = describe_result(result({"loss": 0.5, "psnr": 25.0, "codebook_usage": 0.9, "perplexity": 100.0}))
    assert "validation: psnr 25 codebook_usage 0.9 perplexity 100" in text


def test_a_downstream_run_shows_its_own_validation_terms_not_an_empty_line():
    text = describe_result(result({"loss": 0.75, "answer_loss": 0.5}))
    assert "validation: loss 0.75 answer_loss 0.5" in text
    assert "validation: \n" not in text + "\n"


def test_a_run_logging_lines_switches_the_hub_and_transformers_bars_off(monkeypatch):
    import huggingface_hub.utils as hub
    import transformers.utils.logging as hf_logging

    from lgvq_core.runner.loop import quiet_third_party_bars

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_third_party_bars("bar")  # lgvq draws a bar itself: theirs are left as they are
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    quiet_third_party_bars("log")
    assert hub.are_progress_bars_disabled() and not hf_logging.is_progress_bar_enabled()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_the_help_of_lgvq_run_names_both_kinds_of_run(capsys):
    import pytest

    from lgvq_core.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "train a tokenizer, or a model on a tokenizer's frozen codes, from a run file" in text
