"""Spec records: what a plugin hands to the registry for each component it provides.

A spec names a component, points at its attrs config class and at a factory given as a
``"module:attr"`` string. The factory module is imported only when the component is built,
so listing and validating components never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from lgvq_core.errors import LgvqError

#: Component kinds, in the order the CLI shows them. Each has one registration hook,
#: ``lgvq_<kind>s`` (``lgvq_alignment_losses`` for ``alignment_loss``).
KINDS: tuple[str, ...] = (
    "backbone",
    "quantizer",
    "text_encoder",
    "alignment_loss",
    "dataset",
    "task",
    "callback",
    "downstream",
    "logger",
    "importer",
    "exporter",
)

#: Registration hook name for each kind.
HOOK_FOR_KIND: dict[str, str] = {
    "backbone": "lgvq_backbones",
    "quantizer": "lgvq_quantizers",
    "text_encoder": "lgvq_text_encoders",
    "alignment_loss": "lgvq_alignment_losses",
    "dataset": "lgvq_datasets",
    "task": "lgvq_tasks",
    "callback": "lgvq_callbacks",
    "downstream": "lgvq_downstream_models",
    "logger": "lgvq_loggers",
    "importer": "lgvq_importers",
    "exporter": "lgvq_exporters",
}


def normalize_name(name: str) -> str:
    """Registry key of a name: case-insensitive, ``-`` and ``_`` equal."""
    return name.strip().lower().replace("_", "-")


def normalize_kind(kind: str) -> str:
    """Accept ``text-encoder``, ``text_encoders``, ``Backbone`` … and return the canonical kind."""
    key = kind.strip().lower().replace("-", "_")
    if key not in KINDS and key.endswith("s") and key[:-1] in KINDS:
        key = key[:-1]
    if key == "alignment":
        key = "alignment_loss"
    if key not in KINDS:
        raise ValueError(
            f"unknown component kind {kind!r}; kinds are: " + ", ".join(k.replace("_", "-") for k in KINDS)
        )
    return key


class ComponentImportError(LgvqError):
    """A registered component whose factory cannot be imported (a missing optional dependency)."""


def _check_factory(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"factory must be 'module:attr', got {value!r}")


def _check_config_cls(instance: Any, attribute: attrs.Attribute, value: type) -> None:
    if not attrs.has(value):
        raise TypeError(f"config_cls of {instance.name!r} must be an attrs class, got {value!r}")


def _check_name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or normalize_name(value) != value.lower().replace("_", "-") or " " in value:
        raise ValueError(f"component name must be non-empty, without spaces, got {value!r}")


@attrs.frozen
class ComponentSpec:
    """One component a plugin provides.

    ``factory`` is called as ``factory(config, context)`` where ``config`` is an instance of
    ``config_cls`` and ``context`` a :class:`lgvq_core.context.BuildContext`.
    """

    name: str = attrs.field(validator=_check_name)
    summary: str
    config_cls: type = attrs.field(validator=_check_config_cls)
    factory: str = attrs.field(validator=_check_factory)

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory callable."""
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            hint = f"pip install {missing.split('.')[0]}" if isinstance(missing, str) and missing else "see its docs"
            raise ComponentImportError(
                f"component {self.name!r}: its factory module {module_name} cannot be imported (missing module "
                f"{missing!r}); install what the plugin needs ({hint}), or see `lgvq plugins`"
            ) from None
        target: Any = module
        for part in attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ComponentImportError(
                    f"component {self.name!r}: its factory {self.factory} does not exist ({module_name} has no {attr!r})"
                ) from None
        return target


@attrs.frozen
class BackboneSpec(ComponentSpec):
    """A backbone, with the quantizer table it uses when the run file gives none.

    ``default_quantizer`` is a run-file table (``{"type": "vq", "beta_placement": "codebook"}``);
    ``None`` means the run file must give ``[model.quantizer]``.
    """

    default_quantizer: Mapping[str, Any] | None = None


@attrs.frozen
class DownstreamSpec(ComponentSpec):
    """A model trained on a frozen tokenizer's codes, with the ``[train]`` keys it changes by default.

    ``default_train`` fills keys the run file's ``[train]`` does not give (e.g. AdamW betas
    ``[0.9, 0.95]`` for a transformer prior); ``resolved.toml`` shows the effective values.
    """

    default_train: Mapping[str, Any] = attrs.field(factory=dict)


def _check_better(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in ("higher", "lower", None):
        raise ValueError(f'better must be "higher", "lower" or None (not ranked), got {value!r}')


@attrs.frozen
class ComparisonRow:
    """One line a task adds to ``lgvq compare``'s table: its label, the path of the number in the
    task's results (``("leak-free", "mask-1", "recall@1")``) and which way is better (``None``: shown,
    never ranked)."""

    label: str
    key: tuple[str, ...] = attrs.field(converter=tuple)
    better: str | None = attrs.field(default=None, validator=_check_better)


@attrs.frozen
class TaskSpec(ComponentSpec):
    """An evaluation task, with the rows it puts in ``lgvq compare``'s table, in reading order.

    Tasks are placed by ``comparison_order`` (then name). A task without rows gets one row per number
    of its results, labelled ``<task>: <key.path>`` (ranked where its ``better`` table says so).
    """

    comparison_rows: tuple[ComparisonRow, ...] = attrs.field(default=(), converter=tuple)
    comparison_order: int = 100
    #: Keys of sub-results that score the task's ranked numbers another way (a shuffled-image control,
    #: a blind baseline, a floor or ceiling): ``lgvq compare`` shows their numbers unranked beside them.
    comparison_controls: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class RegisteredComponent:
    """A spec as the registry holds it: the spec plus who provided it."""

    kind: str
    spec: ComponentSpec
    plugin: str
    distribution: str
    version: str

    @property
    def name(self) -> str:
        return self.spec.name
