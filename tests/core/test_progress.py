"""Progress display: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import io

from lgvq_core.runner import progress as progress_module
from lgvq_core.runner.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar_with_losses_and_throughput():
    stream = _Terminal()
    progress = Progress(total=4, start=0, images_per_step=8, mode="auto", log_every=2, stream=stream)
    assert progress.mode == "bar"
    for step in range(1, 5):
        progress.update(step, {"loss": 0.5, "rec_loss": 0.25})
    progress.close()
    text = stream.getvalue()
    assert "4/4" in text and "loss=0.5" in text and "img/s" in text


def test_a_pipe_gets_a_log_line_with_the_time_of_day_every_log_every_steps_and_at_the_end(monkeypatch):
    monkeypatch.setattr(progress_module, "wall_clock", lambda: "12:34:56")
    stream = io.StringIO()
    progress = Progress(total=5, start=0, images_per_step=8, mode="auto", log_every=2, stream=stream)
    assert progress.mode == "log"
    for step in range(1, 6):
        progress.update(step, {"loss": 1.0 / step, "masked_text_loss": 3.0})
    lines = stream.getvalue().splitlines()
    assert [line.split(" |")[0] for line in lines] == ["12:34:56 step 2/5", "12:34:56 step 4/5", "12:34:56 step 5/5"]
    assert "loss 0.5 masked_text_loss 3" in lines[0] and "img/s" in lines[0] and "eta" in lines[0]


def test_only_rank_zero_reports():
    stream = io.StringIO()
    progress = Progress(total=2, start=0, images_per_step=8, mode="log", log_every=1, stream=stream, enabled=False)
    progress.update(1, {"loss": 1.0})
    progress.write("hello")
    assert stream.getvalue() == ""


def test_the_time_of_day_is_hours_minutes_seconds():
    hours, minutes, seconds = progress_module.wall_clock().split(":")

    assert 0 <= int(hours) < 24 and 0 <= int(minutes) < 60 and 0 <= int(seconds) < 62
