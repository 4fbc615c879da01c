"""Progress display: a bar on a terminal, plain periodic log lines otherwise (CI, files)."""

from __future__ import annotations

import datetime
import sys
import time
from typing import TextIO

SHOWN_TERMS = (
    "loss",
    "rec_loss",
    "quantizer_loss",
    "semantic_nce_loss",
    "masked_text_loss",
    "relation_loss",
    "d_total",
    "bits_per_code",
)


def wall_clock() -> str:
    """The local time of day, ``HH:MM:SS``: log lines carry it so that a log file shows the pace."""
    return time.strftime("%H:%M:%S")


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _format_terms(metrics: dict[str, float]) -> str:
    shown = [k for k in SHOWN_TERMS if k in metrics]
    return " ".join(f"{k} {metrics[k]:.4g}" for k in shown)


class Progress:
    """Reports steps. ``mode``: "bar", "log" or "off" ("auto" picks bar on a TTY, else log)."""

    def __init__(
        self,
        total: int,
        start: int,
        images_per_step: int,
        mode: str = "auto",
        log_every: int = 10,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode = mode if enabled else "off"
        self.total = total
        self.start_step = start
        self.images_per_step = images_per_step
        self.log_every = log_every
        self.started = time.perf_counter()
        self.last_metrics: dict[str, float] = {}
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, file=self.stream, dynamic_ncols=True, unit="step")

    def images_per_second(self, step: int) -> float:
        elapsed = time.perf_counter() - self.started
        done = step - self.start_step
        return done * self.images_per_step / elapsed if elapsed > 0 and done > 0 else 0.0

    def update(self, step: int, metrics: dict[str, float]) -> None:
        self.last_metrics = metrics
        if self.mode == "bar" and self.bar is not None:
            self.bar.update(step - self.bar.n)
            postfix = {k: f"{metrics[k]:.4g}" for k in SHOWN_TERMS if k in metrics}
            postfix["img/s"] = f"{self.images_per_second(step):.1f}"
            self.bar.set_postfix(postfix, refresh=False)
        elif self.mode == "log" and (step % self.log_every == 0 or step == self.total):
            elapsed = time.perf_counter() - self.started
            done = step - self.start_step
            eta = elapsed / done * (self.total - step) if done > 0 else 0.0
            self.write(
                f"{wall_clock()} step {step}/{self.total} | {_format_terms(metrics)} | "
                f"{self.images_per_second(step):.1f} img/s | eta {_eta(eta)}"
            )

    def write(self, message: str) -> None:
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
