"""``lgvq run``: run file in, a trained model (a tokenizer, or a downstream model on a tokenizer's
frozen codes) and a complete run directory out. Both kinds of run take this loop; where they differ
it asks the run's kind (:mod:`~lgvq_core.runner.kinds`).

Reading order: :func:`train` builds the run (:mod:`~lgvq_core.runner.components`), writes the run
directory, registers the run file's callbacks, restores ``last`` when resuming
(:mod:`~lgvq_core.runner.state`), then :func:`run_loop` takes steps, logs, validates, saves
samples and checkpoints until ``train.max_steps``, a signal, a callback's stop request, or an
error. Finally the run file's ``[[tasks]]`` evaluate the checkpoint ``lgvq eval`` would use.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lgvq_core import checkpoint_files
from lgvq_core.config.describe import unstructure
from lgvq_core.config.loader import LoadedRunFile
from lgvq_core.context import BuildContext
from lgvq_core.errors import LgvqError, NonFiniteLossError
from lgvq_core.loggers import LoggerRun, RunLoggers, build_loggers, flatten_config
from lgvq_core.registry import get_registry
from lgvq_core.runner import distributed as distr
from lgvq_core.runner import guard, pointers
from lgvq_core.runner.batches import BatchStream, check_one_batch, probe_batch, val_loader
from lgvq_core.runner.components import build_run
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.evaluate import evaluate_in_process
from lgvq_core.runner.progress import Progress
from lgvq_core.runner.reporting import RunResult, describe_result, report_skipped, train_record, used_components
from lgvq_core.runner.rundir import MetricsWriter, create_run_dir, environment_report, read_metrics, write_run_files
from lgvq_core.runner.state import promote_pending, restore, save, save_final, save_pending
from lgvq_core.runner.validation import save_samples, validate_and_keep_best

#: Stop reasons after which the run file's tasks evaluate the result (a signal skips them).
EVALUATED_STOPS = ("max_steps", "early-stopping")


class SignalGuard:
    """SIGINT/SIGTERM request a clean stop (``last`` is saved); a second SIGINT aborts."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.previous: dict[int, Any] = {}
        self.received = 0

    def _handle(self, signum, frame) -> None:
        self.received += 1
        if self.received > 1 and signum == signal.SIGINT:
            record = None
            if self.run.run_dir is not None:  # the pointer only: no hashing while the user waits
                record, _ = checkpoint_files.read_pointer(self.run.run_dir / "checkpoints", "last")
            self.run.log(
                "second SIGINT: stopping without saving a new checkpoint; "
                + (
                    f"checkpoints/last still names the one saved earlier ({record['dir']})"
                    if record
                    else "no checkpoint was saved yet"
                )
            )
            raise KeyboardInterrupt
        self.run.request_stop("signal")
        self.run.stop_signal = signum
        again = " (a second SIGINT stops without saving it)" if signum == signal.SIGINT else ""
        self.run.log(f"received {signal.Signals(signum).name}: saving checkpoints/last and stopping{again}")

    def __enter__(self) -> SignalGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def run_loop(run: RunContext, metrics_writer: MetricsWriter | None) -> RunResult:
    """Take steps until ``train.max_steps`` or a stop request; ``last`` is saved at the end."""
    config = run.config
    train = config.train
    stream = BatchStream(run)
    validation_loader = val_loader(run)
    probe = probe_batch(run, 8)
    draws_samples = run.is_main and run.run_kind.draws_samples(run, probe)
    images_per_step = train.batch_size * train.accumulate * run.world_size
    progress = Progress(
        total=train.max_steps,
        start=run.step,
        images_per_step=images_per_step,
        mode=config.run.progress,
        log_every=config.run.log_every,
        enabled=run.is_main,
    )
    started = time.perf_counter()
    start_step = run.step
    last_metrics: dict[str, float] = {}
    val_metrics: dict[str, float] = {}
    hook = run.plugin_manager.hook
    if run.is_main:  # left by a process that died before proving it: never promoted now
        pointers.discard_pending(run.run_dir / "checkpoints")
    hook.lgvq_train_start(run=run)
    try:
        with SignalGuard(run):
            while run.step < train.max_steps and run.stop_reason is None:
                micro_batches = [stream.next() for _ in range(train.accumulate)]
                if any(batch is None for batch in micro_batches):
                    break  # a stop was requested while unreadable batches were skipped: no step
                metrics = hook.lgvq_train_step(run=run, batch=micro_batches)
                if metrics is None:
                    raise LgvqError("no plugin answered lgvq_train_step")
                guard.check_step_metrics(metrics, run.step + 1)
                # the loss just computed came from the pending checkpoint's weights: it is good
                promote_pending(run)
                run.step += 1
                if run.step_statistics:  # one device sync for every statistic
                    names = list(run.step_statistics)
                    values = torch.stack([run.step_statistics[n].float().reshape(()) for n in names]).tolist()
                    metrics.update(zip(names, values, strict=True))
                hook.lgvq_train_batch_end(run=run, metrics=metrics)
                if run.step % config.run.log_every == 0 or run.step == train.max_steps:
                    metrics.update(run.extra_metrics)
                    run.extra_metrics = {}
                    metrics = distr.reduce_mean(metrics, run.dist, run.device)
                    if metrics_writer is not None:
                        metrics_writer.write(train_record(run, metrics, started, images_per_step))
                last_metrics = metrics
                progress.update(run.step, metrics)
                is_last = run.step >= train.max_steps
                if run.step % train.val_every == 0 or is_last:
                    val_metrics = validate_and_keep_best(run, validation_loader, metrics_writer, progress)
                if draws_samples and (run.step % train.sample_every == 0 or is_last):
                    save_samples(run, probe)
                    if run.loggers:
                        run.loggers.pictures()
                if run.step % train.checkpoint_every == 0 and not is_last:
                    save_pending(run)
                if distr.any_rank(run.stop_reason is not None, run.dist, run.device) and run.stop_reason is None:
                    run.stop_reason = "signal"
        progress.close()
        if run.stop_reason is None:
            run.stop_reason = "max_steps"
        save_final(run, probe)
    except BaseException as exc:
        progress.close()
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, NonFiniteLossError):
            guard.settle_nonfinite(exc, run.run_dir / "checkpoints" if run.is_main else None)
        hook.lgvq_exception(run=run, exc=exc)
        raise
    hook.lgvq_train_end(run=run)
    seconds = time.perf_counter() - started
    done = run.step - start_step
    return RunResult(
        run_dir=run.run_dir,
        step=run.step,
        stop_reason=run.stop_reason,
        final_metrics=last_metrics,
        images_per_second=done * images_per_step / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        val_metrics=val_metrics,
        skipped_items=list(run.skipped_items),
        stop_signal=run.stop_signal,
    )


def register_callbacks(run: RunContext) -> list[Any]:
    """Build the run file's ``[[callbacks]]`` and register them like plugins (unknown hooks fail)."""
    registry = get_registry()
    plugins = []
    for i, component in enumerate(run.config.callbacks):
        path = f"$.callbacks[{i}]"
        entry = registry.get("callback", component.type, f"{path}.type")
        plugin = registry.build("callback", component, path, BuildContext(device=str(run.device)))
        try:
            run.plugin_manager.register_plugin(
                plugin, f"callback-{i}-{component.type}", entry.distribution, entry.version
            )
        except ValueError as exc:
            raise LgvqError(f"{path}: callback {component.type!r} ({entry.distribution}): {exc}") from None
        plugins.append(plugin)
    return plugins


def _write_run_directory(
    run: RunContext, source_text: str, resuming: bool, loggers: list[tuple[str, Any]]
) -> MetricsWriter | None:
    if not run.is_main:
        return None
    plugins = get_registry().report()
    plugins["components"] = used_components(run.config)
    write_run_files(
        run.run_dir,
        source_text,
        run.config,
        run.overrides,
        run.lr,
        plugins,
        environment_report(run.device, run.world_size),
        keep_config=resuming,
    )
    run.run_kind.started(run)
    metrics_writer = MetricsWriter(run.run_dir / "metrics.jsonl")
    if resuming:
        metrics_writer.truncate_after(run.step)
    if loggers:
        run.loggers = RunLoggers(loggers, run.run_dir, run.log)
        hyperparameters = flatten_config(unstructure(run.config))
        start = LoggerRun(
            run_dir=run.run_dir,
            name=run.config.run.name,
            output_dir=Path(run.config.run.output_dir),
            hyperparameters=hyperparameters,
            step=run.step,
            previous_state=None,
        )
        run.loggers.start(start, read_metrics(run.run_dir) if resuming else [])
        metrics_writer.on_write = run.loggers.metrics
    run.log(f"run directory: {run.run_dir}  (lr {run.lr:.3g}, {run.world_size} process(es), {run.device})")
    return metrics_writer


def quiet_third_party_bars(progress: str) -> None:
    """Without lgvq's own bar (``progress = "log"`` or ``"off"``, or ``"auto"`` off a terminal), the
    loading bars of libraries the plugins use (Hugging Face hub and transformers) stay off too: a log
    holds lines, not redrawn bars."""
    if progress == "bar" or (progress == "auto" and sys.stderr.isatty()):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by the hub and transformers on import
    for name, call in (
        ("huggingface_hub.utils", "disable_progress_bars"),
        ("transformers.utils.logging", "disable_progress_bar"),
    ):
        module = sys.modules.get(name)
        if module is not None and callable(getattr(module, call, None)):
            getattr(module, call)()  # already imported: switch off at run time


def train(
    loaded: LoadedRunFile,
    source_text: str = "",
    overrides: list[str] | None = None,
    resume_dir: str | Path | None = None,
) -> RunResult:
    """Train from a validated run file; with ``resume_dir``, continue that run from ``last``."""
    config = loaded.config
    torch.manual_seed(config.run.seed)
    quiet_third_party_bars(config.run.progress)
    run = build_run(loaded, overrides, resuming=resume_dir is not None)
    callbacks: list[Any] = []
    status = "FAILED"
    try:
        for warning in loaded.warnings:
            run.log(str(warning))
        check_one_batch(run)  # before anything is written
        loggers = build_loggers(config) if run.is_main else []  # a missing tracker package stops it here too
        if resume_dir is not None:
            run.run_dir = Path(resume_dir)
        elif run.is_main:
            run.run_dir = create_run_dir(config.run.output_dir, config.run.name)
        run.run_dir = Path(distr.broadcast_object(str(run.run_dir) if run.run_dir else None, run.dist))

        if run.text_cache is not None and run.text_cache.mode != "off" and run.run_kind.uses_text(run):
            captions = sorted(set(run.train_data.all_captions()))
            run.log(f"encoding {len(captions)} training captions once (text feature cache: {run.text_cache.mode})")
            shared = run.text_cache.mode == "disk" and run.dist.enabled
            if shared:
                run.log(f"  split across {run.world_size} processes through the disk cache")
            run.text_cache.warm_shared(captions, run.rank, run.world_size, wait=lambda: distr.barrier(run.dist))

        callbacks = register_callbacks(run)  # before restore: their lgvq_load_checkpoint sees their state
        if resume_dir is not None:
            restore(run, run.run_dir)
            run.log(f"resumed {run.run_dir} at step {run.step}")
        metrics_writer = _write_run_directory(run, source_text, resuming=resume_dir is not None, loggers=loggers)

        result = run_loop(run, metrics_writer)
        if run.skipped_items:
            report_skipped(run)
        distr.barrier(run.dist)  # the ranks leave the process group together, not while one still sends
        if run.is_main and config.tasks and result.stop_reason in EVALUATED_STOPS:
            results = evaluate_in_process(run)
            if run.loggers:
                run.loggers.results(results, run.step)
        status = "FINISHED" if result.stop_reason in EVALUATED_STOPS else "KILLED"
        return result
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        if run.loggers:
            run.loggers.pictures()
            run.loggers.finish(status)
        for plugin in callbacks:
            run.plugin_manager.unregister(plugin)
        distr.shutdown_distributed()


__all__ = ["RunContext", "RunResult", "build_run", "describe_result", "restore", "run_loop", "save", "train"]
