"""lgvq's public API: everything a plugin or a user imports from lgvq-core.

Users load a trained tokenizer and turn images into codes and back::

    from lgvq_core.api import load_tokenizer

    tokenizer = load_tokenizer("runs/quickstart/20261206-184325-338aa8")  # its best checkpoint
    codes = tokenizer.encode(images)        # B×3×H×W in [-1, 1] -> B×h×w code indices
    vectors = tokenizer.embed(codes)        # B×D×h×w: the codebook's vectors at those indices
    recon = tokenizer.decode(codes)         # B×3×H×W

Plugins (lgvq-backbones, lgvq-text-encoders, lgvq-tasks and third-party ones) import from here
only; a test holds them to it. The names, by what they are for:

- registering: :func:`hookimpl`, the spec records (:class:`ComponentSpec`, :class:`BackboneSpec`,
  :class:`TaskSpec`, :class:`ComparisonRow`, :class:`DownstreamSpec`);
- run-file options: :func:`option` and its validators, :class:`Problem` (a config class's
  ``check``), :class:`TextEncoderConfig`;
- the contracts a component keeps: :class:`Tokenizer`, :class:`Quantizer`, :class:`TextEncoder`,
  :class:`AlignmentLoss`, :class:`CaptionedImages` (datasets), :class:`TrainedModel` (what a task
  evaluates), :class:`FrozenTokenizer` (what a downstream model is built on), :class:`BuildContext`
  (what every factory is given);
- helpers a component shares with lgvq's own: code lookup and statistics for quantizers, image
  quality, LPIPS, WordNet, atomic writes, batches of a split, reading a checkpoint through the
  loader, generating samples;
- the field's tools: :class:`Logger` and :class:`LoggerRun` (an experiment tracker), what an importer
  returns (:class:`ImportedCheckpoint`, and :func:`read_lightning_checkpoint` to read a .ckpt without
  running code) and what an exporter writes (:class:`ExportSource`);
- errors: :class:`LgvqError` and its kinds.

Importing this module does not import torch: each name is imported from its module when first
used (PEP 562), so a plugin's registration module can import :func:`hookimpl` from here and stay
torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> (module, name in that module).
_EXPORTS: dict[str, tuple[str, str]] = {
    # registering
    "hookimpl": ("lgvq_core.plugins", "hookimpl"),
    "ComponentSpec": ("lgvq_core.specs", "ComponentSpec"),
    "BackboneSpec": ("lgvq_core.specs", "BackboneSpec"),
    "TaskSpec": ("lgvq_core.specs", "TaskSpec"),
    "ComparisonRow": ("lgvq_core.specs", "ComparisonRow"),
    "DownstreamSpec": ("lgvq_core.specs", "DownstreamSpec"),
    # run-file options
    "option": ("lgvq_core.config.fields", "option"),
    "positive": ("lgvq_core.config.fields", "positive"),
    "non_negative": ("lgvq_core.config.fields", "non_negative"),
    "probability": ("lgvq_core.config.fields", "probability"),
    "in_range": ("lgvq_core.config.fields", "in_range"),
    "Problem": ("lgvq_core.config.problems", "Problem"),
    "TextEncoderConfig": ("lgvq_core.text_encoder_config", "TextEncoderConfig"),
    # contracts
    "BuildContext": ("lgvq_core.context", "BuildContext"),
    "Tokenizer": ("lgvq_core.tokenizer", "Tokenizer"),
    "TokenizerOutput": ("lgvq_core.tokenizer", "TokenizerOutput"),
    "Quantizer": ("lgvq_core.quantizers.base", "Quantizer"),
    "QuantizerOutput": ("lgvq_core.quantizers.base", "QuantizerOutput"),
    "TextEncoder": ("lgvq_core.text_encoder", "TextEncoder"),
    "TextFeatures": ("lgvq_core.text_encoder", "TextFeatures"),
    "FrozenTokenizer": ("lgvq_core.downstream", "FrozenTokenizer"),
    "SampleConditions": ("lgvq_core.downstream", "SampleConditions"),
    "AlignmentLoss": ("lgvq_core.alignment.base", "AlignmentLoss"),
    "AlignmentInputs": ("lgvq_core.alignment.base", "AlignmentInputs"),
    "CaptionedImages": ("lgvq_core.data.base", "CaptionedImages"),
    "TrainedModel": ("lgvq_core.tasks", "TrainedModel"),
    "EvalShard": ("lgvq_core.tasks", "EvalShard"),
    # quantizer helpers
    "flatten_latents": ("lgvq_core.quantizers.lookup", "flatten_latents"),
    "unflatten_codes": ("lgvq_core.quantizers.lookup", "unflatten_codes"),
    "squared_distances": ("lgvq_core.quantizers.lookup", "squared_distances"),
    "split_squared_error": ("lgvq_core.quantizers.lookup", "split_squared_error"),
    "lookup_codes": ("lgvq_core.quantizers.lookup", "lookup_codes"),
    "code_counts": ("lgvq_core.quantizers.lookup", "code_counts"),
    "batch_code_stats": ("lgvq_core.quantizers.lookup", "batch_code_stats"),
    "usage_from_counts": ("lgvq_core.quantizers.base", "usage_from_counts"),
    "vq_loss_weights": ("lgvq_core.quantizers.vq", "loss_weights"),
    "one_code_per_position": ("lgvq_core.tasks", "one_code_per_position"),
    # text encoder helpers
    "word_ids_from_starts": ("lgvq_core.text_encoder", "word_ids_from_starts"),
    "encode_masked": ("lgvq_core.alignment.masked_text", "encode_masked"),
    "build_alignment_module": ("lgvq_core.alignment.module", "build_alignment_module"),
    # images
    "to_unit_range": ("lgvq_core.image_quality", "to_unit_range"),
    "psnr_per_image": ("lgvq_core.image_quality", "psnr_per_image"),
    "LPIPS": ("lgvq_core.lpips", "LPIPS"),
    "load_lpips": ("lgvq_core.lpips", "load_lpips"),
    "save_reconstruction_grid": ("lgvq_core.runner.samples", "save_reconstruction_grid"),
    # data and annotations
    "collate": ("lgvq_core.data.base", "collate"),
    "ATTRIBUTES": ("lgvq_core.data.annotations", "ATTRIBUTES"),
    "missing_annotation_message": ("lgvq_core.data.annotations", "missing_annotation_message"),
    "annotation_problem": ("lgvq_core.data.annotations", "annotation_problem"),
    "build_component": ("lgvq_core.registry", "build"),
    # WordNet
    "WordNetUnavailable": ("lgvq_core.wordnet", "WordNetUnavailable"),
    "WORDNET_INSTALL_HINT": ("lgvq_core.wordnet", "INSTALL_HINT"),
    "load_wordnet": ("lgvq_core.wordnet", "load_wordnet"),
    "prepare_wordnet": ("lgvq_core.wordnet", "prepare_wordnet"),
    # files
    "write_bytes_atomic": ("lgvq_core.atomic", "write_bytes_atomic"),
    "write_json_atomic": ("lgvq_core.atomic", "write_json_atomic"),
    "describe_load_error": ("lgvq_core.safe_load", "describe_load_error"),
    # trained runs
    "load_tokenizer": ("lgvq_core.runner.load", "load_tokenizer"),
    "LoadedTokenizer": ("lgvq_core.runner.load", "LoadedTokenizer"),
    "read_checkpoint": ("lgvq_core.runner.load", "read_checkpoint"),
    "CheckpointRead": ("lgvq_core.runner.load", "CheckpointRead"),
    # exporters (`lgvq export`)
    "ExportSource": ("lgvq_core.interop.exporting", "ExportSource"),
    "ExportError": ("lgvq_core.errors", "ExportError"),
    # importers (`lgvq import`)
    "ImportedCheckpoint": ("lgvq_core.interop.records", "ImportedCheckpoint"),
    "read_lightning_checkpoint": ("lgvq_core.interop.lightning", "read_lightning_checkpoint"),
    "plain_data": ("lgvq_core.interop.lightning", "plain_data"),
    "has_unread": ("lgvq_core.interop.lightning", "has_unread"),
    # loggers (`[[loggers]]`)
    "Logger": ("lgvq_core.loggers", "Logger"),
    "LoggerRun": ("lgvq_core.loggers", "LoggerRun"),
    # downstream runs: batches, samples
    "to_device": ("lgvq_core.runner.batches", "to_device"),
    "model_inputs": ("lgvq_core.runner.downstream", "model_inputs"),
    "generate_images": ("lgvq_core.runner.generate", "generate_images"),
    "save_images": ("lgvq_core.runner.generate", "save_images"),
    # errors
    "LgvqError": ("lgvq_core.errors", "LgvqError"),
    "ConfigError": ("lgvq_core.errors", "ConfigError"),
    "CheckpointError": ("lgvq_core.errors", "CheckpointError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'lgvq_core.api' has no attribute {name!r}") from None
    # looked up in its module on every access (not cached here), so that a patch of the module is seen
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers: the same names, imported eagerly
    from lgvq_core.alignment.base import AlignmentInputs, AlignmentLoss
    from lgvq_core.alignment.masked_text import encode_masked
    from lgvq_core.alignment.module import build_alignment_module
    from lgvq_core.atomic import write_bytes_atomic, write_json_atomic
    from lgvq_core.config.fields import in_range, non_negative, option, positive, probability
    from lgvq_core.config.problems import Problem
    from lgvq_core.context import BuildContext
    from lgvq_core.data.annotations import ATTRIBUTES, annotation_problem, missing_annotation_message
    from lgvq_core.data.base import CaptionedImages, collate
    from lgvq_core.downstream import FrozenTokenizer, SampleConditions
    from lgvq_core.errors import CheckpointError, ConfigError, ExportError, LgvqError
    from lgvq_core.image_quality import psnr_per_image, to_unit_range
    from lgvq_core.interop.exporting import ExportSource
    from lgvq_core.interop.lightning import has_unread, plain_data, read_lightning_checkpoint
    from lgvq_core.interop.records import ImportedCheckpoint
    from lgvq_core.loggers import Logger, LoggerRun
    from lgvq_core.lpips import LPIPS, load_lpips
    from lgvq_core.plugins import hookimpl
    from lgvq_core.quantizers.base import Quantizer, QuantizerOutput, usage_from_counts
    from lgvq_core.quantizers.lookup import (
        batch_code_stats,
        code_counts,
        flatten_latents,
        lookup_codes,
        split_squared_error,
        squared_distances,
        unflatten_codes,
    )
    from lgvq_core.quantizers.vq import loss_weights as vq_loss_weights
    from lgvq_core.registry import build as build_component
    from lgvq_core.runner.batches import to_device
    from lgvq_core.runner.downstream import model_inputs
    from lgvq_core.runner.generate import generate_images, save_images
    from lgvq_core.runner.load import CheckpointRead, LoadedTokenizer, load_tokenizer, read_checkpoint
    from lgvq_core.runner.samples import save_reconstruction_grid
    from lgvq_core.safe_load import describe_load_error
    from lgvq_core.specs import BackboneSpec, ComparisonRow, ComponentSpec, DownstreamSpec, TaskSpec
    from lgvq_core.tasks import EvalShard, TrainedModel, one_code_per_position
    from lgvq_core.text_encoder import TextEncoder, TextFeatures, word_ids_from_starts
    from lgvq_core.text_encoder_config import TextEncoderConfig
    from lgvq_core.tokenizer import Tokenizer, TokenizerOutput
    from lgvq_core.wordnet import INSTALL_HINT as WORDNET_INSTALL_HINT
    from lgvq_core.wordnet import WordNetUnavailable, load_wordnet, prepare_wordnet
