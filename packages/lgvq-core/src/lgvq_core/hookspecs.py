"""The lgvq hook specifications: the whole contract between lgvq and its plugins.

A plugin is a module registered under the ``lgvq`` entry-point group. It implements any of the
hooks below with :data:`lgvq_core.hookimpl`. Every docstring here is the hook's contract: what it
receives, what it returns, and when (and on which ranks) it is called.

Rules for implementations (inherited from pluggy):

- Argument names must match the spec; an implementation may accept fewer arguments.
- No keyword-only parameters and no default values: pluggy passes arguments by name and ignores
  keyword-only ones.
- Hooks that receive ``run`` get a :class:`lgvq_core.runner.context.RunContext`. New information
  reaches plugins as new attributes of that object, never as new hook parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

    from lgvq_core.runner.context import RunContext
    from lgvq_core.specs import BackboneSpec, ComponentSpec, DownstreamSpec

PROJECT = "lgvq"

hookspec = pluggy.HookspecMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Registration hooks
#
# Called once per plugin manager, when the registry is first built, on every rank. They take
# no arguments, must not import torch (return ``"module:attr"`` factories instead) and return
# an iterable of spec records. All results are collected; a name returned twice for the same
# kind is an error that names both plugins.
# --------------------------------------------------------------------------------------------


@hookspec
def lgvq_quantizers() -> Iterable[ComponentSpec]:
    """Return the quantizers this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records. The factory is called as
        ``factory(config, context)`` and returns a module implementing the quantizer contract of
        :class:`lgvq_core.quantizers.base.Quantizer` (maps ``z`` to ``quant``, indices, loss and
        statistics; exposes ``codebook`` and ``decode_indices``).
    """


@hookspec
def lgvq_backbones() -> Iterable[BackboneSpec]:
    """Return the tokenizer backbones (encoder, decoder, reconstruction losses) this plugin provides.

    :returns: :class:`~lgvq_core.specs.BackboneSpec` records. The factory is called as
        ``factory(config, context)``; ``context.quantizer`` holds the already-built quantizer.
        It returns a :class:`lgvq_core.tokenizer.Tokenizer`.
    """


@hookspec
def lgvq_text_encoders() -> Iterable[ComponentSpec]:
    """Return the frozen text encoders this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records whose factory returns a
        :class:`lgvq_core.text_encoder.TextEncoder`. The runner freezes it and never checkpoints it.
    """


@hookspec
def lgvq_alignment_losses() -> Iterable[ComponentSpec]:
    """Return the language-guided alignment losses this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records whose factory returns an
        :class:`lgvq_core.alignment.base.AlignmentLoss`. Its trainable parameters join the
        model optimizer (``run.optimizers.model``). The config class must have a ``weight`` field.
    """


@hookspec
def lgvq_datasets() -> Iterable[ComponentSpec]:
    """Return the image–caption datasets this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records whose factory returns a
        :class:`lgvq_core.data.base.CaptionedImages` for ``context.split``.
    """


@hookspec
def lgvq_tasks() -> Iterable[ComponentSpec]:
    """Return the evaluation and downstream tasks this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records whose factory returns an object with
        ``run(model, data, out_dir) -> dict`` (see :mod:`lgvq_core.tasks`).
    """


@hookspec
def lgvq_callbacks() -> Iterable[ComponentSpec]:
    """Return the run callbacks this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records whose factory returns an object
        implementing any of the training-loop hooks below. A ``[[callbacks]]`` table in the run
        file builds one and registers it with the plugin manager for that run only.
    """


@hookspec
def lgvq_downstream_models() -> Iterable[DownstreamSpec]:
    """Return the models trained on frozen codes ("stage 2") this plugin provides.

    :returns: :class:`~lgvq_core.specs.DownstreamSpec` records. The factory is called as
        ``factory(config, context)``; ``context.frozen_tokenizer`` is a
        :class:`lgvq_core.downstream.FrozenTokenizer`. It returns a module implementing the
        downstream-model contract of :mod:`lgvq_core.downstream`. A ``[downstream]`` table names
        one; the runner trains it on cached codes with the same loop as a tokenizer.
    """


@hookspec
def lgvq_loggers() -> Iterable[ComponentSpec]:
    """Return the experiment trackers this plugin provides.

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records whose factory returns an object with
        the methods of :class:`lgvq_core.loggers.Logger`. A ``[[loggers]]`` table builds one on rank 0
        only; the runner hands it every metric line written to ``metrics.jsonl``, the resolved run
        file as hyperparameters, the sample grids and evaluation pictures and the final task numbers.
        A logger that raises is reported once and switched off; the run goes on.
    """


@hookspec
def lgvq_importers() -> Iterable[ComponentSpec]:
    """Return the checkpoint importers this plugin provides (``lgvq import NAME CHECKPOINT OUT_RUN_DIR``).

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records; the config class holds the command's
        options (``--config``, ``--set key=value``). The factory (given a context whose ``log``
        reports progress) returns an object with ``convert(checkpoint) ->``
        :class:`~lgvq_core.interop.records.ImportedCheckpoint`: the run file and the weights under
        lgvq's names, with the account of every source key. It reads the file without running code
        from it (:func:`lgvq_core.interop.lightning.read_lightning_checkpoint`); lgvq-core checks the
        weights against the model the run file builds and writes the run directory
        (:mod:`lgvq_core.interop.importing`).
    """


@hookspec
def lgvq_exporters() -> Iterable[ComponentSpec]:
    """Return the tokenizer exporters this plugin provides (``lgvq export RUN_DIR --format NAME OUT``).

    :returns: :class:`~lgvq_core.specs.ComponentSpec` records; the config class holds the format's
        options (``--set key=value``). The factory returns an object with two methods
        (see :mod:`lgvq_core.interop.exporting`):

        - ``check(config)``: called with the validated run file before any weights are read; raises
          :class:`~lgvq_core.errors.ExportError` naming what the format lacks when it cannot hold
          this tokenizer exactly.
        - ``export(source, out_dir, log)``: writes the :class:`~lgvq_core.interop.exporting.ExportSource`
          (the loaded tokenizer, its run file, evaluation records, provenance) into ``out_dir``, an
          empty staging folder that becomes OUT only when it returns; raising leaves no OUT. A missing
          optional dependency is an ``ExportError`` with the install line, raised by the factory.
    """


# --------------------------------------------------------------------------------------------
# Producer hooks
#
# Called by the runner where one answer is needed: the first non-None result wins
# (``firstresult``). lgvq-core provides the default implementation; a plugin may replace it
# (``tryfirst=True``) or wrap it (``wrapper=True``, e.g. for profiling or timing).
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lgvq_make_optimizers(run: RunContext) -> Any:
    """Create the optimizers for a run.

    Called once on every rank after the model is built and moved to its device, before any
    checkpoint is loaded.

    :param run: the run context; ``run.kind`` says which kind of run it is. A tokenizer run:
        ``run.model_parameters`` (tokenizer + alignment heads) and ``run.discriminator_parameters``
        hold the trainable parameters, ``run.model`` is the tokenizer, ``run.alignment`` the
        alignment module (or ``None``). A downstream run: ``run.model`` is the downstream model
        (its ``param_groups(weight_decay)``), ``run.model_parameters`` its trainable parameters.
        ``run.config`` is the validated run file.
    :returns: a :class:`lgvq_core.runner.optim.Optimizers` (``model``: the optimizer of what the
        run trains; ``discriminator``: a tokenizer run's discriminator, when the backbone has one),
        or ``None`` to let the next implementation answer. The default is the run kind's
        (:mod:`lgvq_core.runner.kinds`).
    """


@hookspec(firstresult=True)
def lgvq_train_step(run: RunContext, batch: Any) -> Any:
    """Run one optimisation step.

    Called on every rank, once per optimizer step. The default is the run kind's
    (:mod:`lgvq_core.runner.kinds`). In a tokenizer run it computes, for each micro-batch, the
    generator loss (reconstruction, quantizer, weighted alignment losses, adversarial term) and
    backpropagates it, then the discriminator loss; after the last micro-batch it steps both
    optimizers. In a downstream run it backpropagates the model's ``training_loss`` on the cached
    codes. A wrapper (``wrapper=True``) sees the whole step.

    :param run: the run context (``run.kind``: ``"tokenizer"`` or ``"downstream"``).
    :param batch: the micro-batches of this step: a list of ``train.accumulate`` collated batches.
        A tokenizer run's: ``image`` B×3×H×W in [-1, 1] on ``run.device``, ``caption``: the sampled
        caption of each image, ``captions``: all captions of each image, ``index`` (see
        :func:`lgvq_core.data.base.collate`). A downstream run's: ``codes`` (the cached code indices),
        captions and the annotations its model asked for (see :mod:`lgvq_core.data.codes`).
    :returns: a ``dict[str, float]`` of the step's loss terms averaged over micro-batches,
        ``"loss"`` being the total loss, or ``None`` to let the next implementation answer.
    """


# --------------------------------------------------------------------------------------------
# Training-loop hooks
#
# Side effects only; return values are ignored. Every implementation is called.
# --------------------------------------------------------------------------------------------


@hookspec
def lgvq_train_start(run: RunContext) -> None:
    """Called on every rank once the model, optimizers and data are ready, before the first step.

    After a resume, ``run.step`` is the step the checkpoint was written at.

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    """


@hookspec
def lgvq_after_quantize(run: RunContext, output: Any) -> None:
    """Called on every rank in each training step of a tokenizer run, right after the tokenizer's
    forward pass (a downstream run never runs its frozen tokenizer during training).

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    :param output: the :class:`lgvq_core.tokenizer.TokenizerOutput` (``quant``, ``indices``,
        ``recon``, ``quantizer_loss``, ``stats``). Tensors are still attached to the graph: read,
        do not modify.
    """


@hookspec
def lgvq_train_batch_end(run: RunContext, metrics: Any) -> None:
    """Called on every rank after each optimisation step (after gradient accumulation completes).

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    :param metrics: ``dict[str, float]`` of this step's loss terms (local to the rank).
        ``run.step`` has already been incremented.
    """


@hookspec
def lgvq_validation_end(run: RunContext, metrics: Any) -> None:
    """Called on **every rank** after each validation pass.

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    :param metrics: ``dict[str, float]`` of validation metrics, already reduced across ranks,
        so every rank sees the same values.
    """


@hookspec
def lgvq_save_checkpoint(run: RunContext, state: Any) -> None:
    """Called on rank 0 while a checkpoint is assembled, before it is written.

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    :param state: the ``dict`` that is saved with ``torch.save`` and loaded with
        ``weights_only=True``. Add entries under a key of your plugin's name, holding only
        tensors, numbers, strings, lists and dicts.
    """


@hookspec
def lgvq_load_checkpoint(run: RunContext, state: Any) -> None:
    """Called on every rank after a checkpoint was loaded for ``--resume``.

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    :param state: the ``dict`` written by :func:`lgvq_save_checkpoint`; read your own key back.
    """


@hookspec
def lgvq_train_end(run: RunContext) -> None:
    """Called on every rank when training ends normally or is interrupted by SIGINT/SIGTERM.

    :param run: the run context; ``run.stop_reason`` says why training ended: ``"max_steps"``,
        ``"signal"``.
    """


@hookspec
def lgvq_exception(run: RunContext, exc: Any) -> None:
    """Called on every rank when training fails with an exception, before it propagates.

    :param run: the run context (:class:`lgvq_core.runner.context.RunContext`).
    :param exc: the exception (a :class:`lgvq_core.errors.NonFiniteLossError` for a NaN/Inf loss,
        whose message already names the last good checkpoint; nothing diverged was kept).
    """
