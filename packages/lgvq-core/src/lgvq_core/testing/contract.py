"""The plugin contract: what every lgvq plugin promises, as a test suite it runs on itself.

In a plugin package's tests::

    from lgvq_core.testing.contract import PluginContract

    class TestMyPlugin(PluginContract):
        plugin = "my-plugin"  # the entry-point name under [project.entry-points.lgvq]

or without writing a test file: ``python -m lgvq_core.testing.contract my-plugin [more plugins]``.

The suite checks that the plugin

- loads through its entry point, and its registration hooks return spec records;
- imports without torch: its plugin module, its registration hooks and its config modules
  leave ``torch`` out of ``sys.modules`` (checked in a fresh interpreter);
- implements only known hooks (a misspelled ``lgvq_backbone`` fails), each marked with
  ``@hookimpl``, with argument names of the hookspec and no keyword-only or default arguments;

and that each component it registers

- has a complete spec (name, one-line summary, attrs config class, ``"module:attr"`` factory);
- has a name no other installed plugin uses for the same kind;
- documents every config field (``option(..., doc)``), declares defaults of the declared types
  (``option("8")`` on an ``int`` fails), and renders in ``lgvq schema``;
- has a config that survives a trip through TOML and rejects an unknown key; a backbone's
  ``default_quantizer`` table is a valid quantizer table;
- has an importable factory, and builds on CPU into the right kind of object, which then works
  on a tiny input (a backbone reconstructs, a quantizer quantizes, a text encoder encodes, an
  alignment loss returns a finite scalar, a dataset yields an item). A quantizer is held to
  more, because its mistakes otherwise surface far away (an IndexError inside the relation loss, a
  usage of 0): integer indices within ``[0, codebook_size)``, a ``codebook`` of shape K×D,
  ``decode_indices(indices)`` equal to ``quant``, a gradient reaching the input through ``quant``,
  and the same output twice in eval mode.

Conventions a config class may follow for the build check (all optional, none imports torch at
module level):

``contract_config()`` (classmethod)
    Returns a small instance to build (default: ``cls()``). Required when the class has
    required keys, and useful to keep a big model small (``ch = 32``).
``contract_context(context)`` (classmethod)
    Receives the :class:`~lgvq_core.context.BuildContext` the suite made for the component's kind
    (see :func:`default_context`) and returns the one to build with, e.g. with a different
    quantizer or image size.
``contract_skip_build: ClassVar[str]``
    Why the component cannot be built without external data (a dataset read from disk, a
    checkpoint only a user has). The build check is then skipped with this reason, visibly.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy
import pytest
import tomli

from lgvq_core import hookspecs
from lgvq_core.config.describe import dumps_toml, format_schema, unstructure
from lgvq_core.config.fields import field_doc
from lgvq_core.config.walker import config_fields, default_problems, structure_component
from lgvq_core.context import BuildContext
from lgvq_core.data.annotations import Question, Referring
from lgvq_core.downstream import FrozenTokenizer
from lgvq_core.errors import ConfigError
from lgvq_core.plugins import ENTRY_POINT_GROUP, LgvqPluginManager, plugin_module_name, plugin_names
from lgvq_core.registry import Registry
from lgvq_core.specs import HOOK_FOR_KIND, BackboneSpec, ComponentSpec, RegisteredComponent, normalize_name

#: Captions the build check encodes and hands out as ``context.train_captions``.
CAPTIONS: tuple[str, ...] = (
    "a red square above a blue circle",
    "two green triangles on a white background",
    "a small yellow star",
    "a large purple circle next to a red square",
)

#: Image side of the build check: small, and divisible by the usual downsampling factors.
IMAGE_SIZE = 32

#: An option name no config class has, for the unknown-key check.
UNKNOWN_KEY = "contract_unknown_key"


class ContractError(AssertionError):
    """A plugin breaks the contract; the message says how."""


# ------------------------------------------------------------------------------------------
# the plugin as a whole
# ------------------------------------------------------------------------------------------
def hook_names() -> set[str]:
    """Names of every lgvq hookspec."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, marker)}


def plugin_module(plugin: str) -> str:
    """The module ``plugin`` registers: its entry point's value (lgvq-core's opt-in ``testing`` included)."""
    names = plugin_names(testing=True)
    if plugin not in names:
        raise ContractError(
            f"no plugin named {plugin!r} in the {ENTRY_POINT_GROUP!r} entry-point group; installed plugins: "
            f"{', '.join(names) or 'none'}. Declare it in pyproject.toml as "
            f'[project.entry-points.{ENTRY_POINT_GROUP}] {plugin} = "your_package._plugin" and reinstall '
            "the package (pip install -e .)"
        )
    return plugin_module_name(plugin)


def load_plugin(plugin: str) -> LgvqPluginManager:
    """A strict plugin manager holding ``plugin`` alone: raises if it cannot be loaded."""
    plugin_module(plugin)
    manager = LgvqPluginManager(strict=True)
    manager.load_entry_points(disabled=(), only=[plugin])
    return manager


def full_manager() -> LgvqPluginManager:
    """Every installed plugin (failures recorded, not raised), as a user has them, plus the test
    doubles the build check uses (``tiny-text`` for alignment losses)."""
    manager = LgvqPluginManager(strict=False)
    manager.load_entry_points(disabled=(), testing=True)
    return manager


def plugin_components(plugin: str) -> list[RegisteredComponent]:
    """Every component ``plugin`` registers, in kind order (raises if it cannot be loaded)."""
    registry = Registry(load_plugin(plugin))
    return [entry for kind in HOOK_FOR_KIND for entry in registry.entries(kind)]


def hook_problems(plugin: Any) -> list[str]:
    """What is wrong with the hook implementations of a plugin object (a module, a class, an instance)."""
    known = hook_names()
    impl_marker = f"{hookspecs.PROJECT}_impl"
    problems: list[str] = []
    for name in sorted(dir(plugin)):
        if not name.startswith(f"{hookspecs.PROJECT}_"):
            continue
        value = getattr(plugin, name, None)
        if not callable(value):
            continue
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; hooks are: {', '.join(sorted(known))}"
            problems.append(f"{name} is not an lgvq hook{hint}")
            continue
        if not hasattr(value, impl_marker):
            problems.append(f"{name} is not marked with @hookimpl (from lgvq_core import hookimpl): pluggy ignores it")
            continue
        signature = inspect.signature(value)
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                problems.append(f"{name}: keyword-only argument {parameter.name!r}; pluggy never passes it")
            elif parameter.default is not inspect.Parameter.empty:
                problems.append(f"{name}: argument {parameter.name!r} has a default value; hooks take none")
    manager = LgvqPluginManager(strict=True)
    try:
        manager.register(plugin, name="contract-check")
        manager.check_pending()
    except (pluggy.PluginValidationError, ValueError) as exc:
        problems.append(str(exc))
    return problems


_TORCH_FREE_SCRIPT = r"""
import importlib, sys, traceback

class TorchBlocker:
    # Records where torch is first imported from and stops the import there (loading torch
    # would only make the check slow).
    stack = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            if self.stack is None:
                frames = [f for f in traceback.format_stack()[:-1] if "<frozen" not in f]
                self.stack = "".join(frames)
            raise ImportError("torch import blocked by the lgvq plugin contract")
        return None

blocker = TorchBlocker()
sys.meta_path.insert(0, blocker)
try:
    module = importlib.import_module(sys.argv[1])
    for hook in sys.argv[2:]:
        function = getattr(module, hook, None)
        if function is not None:
            for spec in list(function() or ()):
                importlib.import_module(spec.config_cls.__module__)
except Exception:
    if blocker.stack is None:
        raise
if blocker.stack is not None:
    print(blocker.stack)
    sys.exit(3)
"""


def torch_import_problem(module: str, timeout: float = 120.0) -> str | None:
    """Import ``module`` and call its registration hooks in a fresh interpreter.

    Returns ``None`` when nothing tried to import torch, else a message with the import chain.
    The child sees the current ``sys.path`` (plugins put there by a test included).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    hooks = sorted(HOOK_FOR_KIND.values())
    result = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE_SCRIPT, module, *hooks],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if result.returncode == 0:
        return None
    if result.returncode == 3:
        return (
            f"importing {module} and calling its registration hooks imports torch, which makes `lgvq plugins`, "
            "`lgvq list` and `lgvq check` slow. Import torch only in factory modules (the spec's factory is a "
            f"'module:attr' string). torch was first imported here:\n{result.stdout}"
        )
    return f"importing {module} in a fresh interpreter failed:\n{result.stderr[-4000:]}"


# ------------------------------------------------------------------------------------------
# one component
# ------------------------------------------------------------------------------------------
def spec_problems(entry: RegisteredComponent) -> list[str]:
    """What is missing from a component's spec record."""
    spec = entry.spec
    problems = []
    if not isinstance(spec, ComponentSpec):
        problems.append(f"{spec!r} is not a ComponentSpec")
        return problems
    if not spec.summary or not spec.summary.strip():
        problems.append("summary is empty; `lgvq list` shows it")
    elif "\n" in spec.summary:
        problems.append("summary spans several lines; keep it to one (`lgvq list` prints one line per component)")
    if not attrs.has(spec.config_cls):
        problems.append(f"config_cls {spec.config_cls!r} is not an attrs class")
    if ":" not in spec.factory:
        problems.append(f"factory {spec.factory!r} is not a 'module:attr' string")
    if entry.kind == "backbone" and not isinstance(spec, BackboneSpec):
        problems.append("a backbone's spec must be a BackboneSpec (it may leave default_quantizer as None)")
    return problems


def undocumented_fields(config_cls: type) -> list[str]:
    """Fields of a config class without a ``doc`` (``lgvq schema`` would show nothing for them)."""
    return [field.name for field in config_fields(config_cls) if not field_doc(field).strip()]


def default_type_problems(config_cls: type) -> list[str]:
    """Defaults that are not values of their declared type (they pass ``lgvq check``, then fail in the model)."""
    return [problem.message for problem in default_problems(config_cls)]


def schema_problem(entry: RegisteredComponent) -> str | None:
    """``lgvq schema KIND NAME`` must render every field, and every default must be writable as TOML."""
    try:
        text = format_schema(entry.kind, entry.spec.name, entry.spec.summary, entry.spec.config_cls)
    except Exception as exc:  # noqa: BLE001 - any error is the finding
        return f"`lgvq schema {entry.kind.replace('_', '-')} {entry.spec.name}` fails: {type(exc).__name__}: {exc}"
    unwritable = [line.strip() for line in text.splitlines() if line.endswith("(not a TOML value)")]
    if unwritable:
        return (
            "defaults a run file cannot hold (use int, float, str, bool, a list of them, or a Literal): "
            + "; ".join(unwritable)
        )
    return None


def contract_config(config_cls: type) -> Any:
    """The instance the contract builds: ``config_cls.contract_config()`` or the defaults."""
    make = getattr(config_cls, "contract_config", None)
    if make is not None:
        config = make()
        if not isinstance(config, config_cls):
            raise ContractError(f"{config_cls.__qualname__}.contract_config() returned {config!r}, not an instance")
        return config
    required = [f.name for f in config_fields(config_cls) if f.default is attrs.NOTHING]
    if required:
        raise ContractError(
            f"{config_cls.__qualname__} has required keys ({', '.join(required)}); give it a contract_config() "
            "classmethod that returns a small valid instance"
        )
    return config_cls()


def component_table(entry: RegisteredComponent, config: Any) -> dict[str, Any]:
    """``config`` as the run-file table that names ``entry`` (``type`` first)."""
    return {"type": entry.spec.name, **unstructure(config)}


def round_trip_problem(entry: RegisteredComponent, registry: Registry) -> str | None:
    """A config written as TOML and read back must equal the original."""
    config = contract_config(entry.spec.config_cls)
    text = dumps_toml({"component": component_table(entry, config)})
    table = tomli.loads(text)["component"]
    try:
        back = structure_component(entry.kind, table, "$", registry=registry).config
    except ConfigError as exc:
        return f"the config written as TOML does not load back:\n{text}\n" + "\n".join(exc.problems)
    if back != config:
        return f"the config changed on its way through TOML:\nbefore: {config!r}\nafter:  {back!r}\nTOML:\n{text}"
    return None


def unknown_key_problem(entry: RegisteredComponent, registry: Registry) -> str | None:
    """A table with a key the config class does not have must be rejected, naming the key."""
    table = component_table(entry, contract_config(entry.spec.config_cls))
    table[UNKNOWN_KEY] = 1
    try:
        structure_component(entry.kind, table, "$", registry=registry)
    except ConfigError as exc:
        if any(p.startswith(f"$.{UNKNOWN_KEY}: unknown key") for p in exc.problems):
            return None
        return f"the unknown key {UNKNOWN_KEY!r} was rejected without naming it: {exc.problems}"
    return f"a table with the unknown key {UNKNOWN_KEY!r} was accepted; config classes must reject unknown keys"


def default_quantizer_problem(entry: RegisteredComponent, registry: Registry) -> str | None:
    """A backbone's ``default_quantizer`` must be a valid table of an installed quantizer."""
    table = getattr(entry.spec, "default_quantizer", None)
    if table is None:
        return None
    try:
        structure_component("quantizer", dict(table), f"{entry.spec.name}.default_quantizer", registry=registry)
    except ConfigError as exc:
        return "default_quantizer is not a valid quantizer table:\n" + "\n".join(exc.problems)
    return None


def default_context(entry: RegisteredComponent, registry: Registry, cache_dir: str) -> BuildContext:
    """The build context the contract gives a component of ``entry.kind``.

    Every kind gets CPU, seed 0, 32-pixel images, the train split, a temporary cache folder and
    :data:`CAPTIONS` as training captions. A component whose config class says ``uses_text = True``
    (it reads the text encoder when built) gets the ``tiny-text`` encoder. A backbone also gets a
    quantizer: its ``default_quantizer``, else a ``vq`` with 32 codes of width 16. An alignment loss
    also gets the ``tiny-text`` encoder, ``code_dim`` 16 and a 4×4 latent grid.
    """
    context = BuildContext(
        device="cpu",
        seed=0,
        image_size=IMAGE_SIZE,
        split="train",
        train_captions=lambda: list(CAPTIONS),
        cache_dir=cache_dir,
        log=lambda message: None,
    )
    if getattr(entry.spec.config_cls, "uses_text", False) is True:  # e.g. VQCT's word prior
        context.text_encoder = registry.build("text_encoder", {"type": "tiny-text"}, "$.text_encoder", context)
    if entry.kind == "backbone":
        table = getattr(entry.spec, "default_quantizer", None) or {"type": "vq", "codebook_size": 32, "dim": 16}
        context.quantizer = registry.build("quantizer", dict(table), "$.model.quantizer", context)
    elif entry.kind == "alignment_loss":
        context.text_encoder = registry.build("text_encoder", {"type": "tiny-text"}, "$.text_encoder", context)
        context.code_dim = 16
        context.latent_size = (4, 4)
    elif entry.kind == "downstream":
        import torch

        context.text_encoder = registry.build("text_encoder", {"type": "tiny-text"}, "$.text_encoder", context)
        generator = torch.Generator().manual_seed(0)
        context.frozen_tokenizer = FrozenTokenizer(
            codebook_size=32, grid=(4, 4), code_dim=16, codebook=torch.randn(32, 16, generator=generator)
        )
    return context


def build_component(entry: RegisteredComponent, registry: Registry, cache_dir: str) -> tuple[Any, Any, BuildContext]:
    """Build ``entry`` as the contract does: returns (component, config, context)."""
    config_cls = entry.spec.config_cls
    config = contract_config(config_cls)
    context = default_context(entry, registry, cache_dir)
    if entry.kind == "downstream":
        context.train_data = code_dataset(config, registry, context)
        context.train_captions = context.train_data.all_captions
    adjust = getattr(config_cls, "contract_context", None)
    if adjust is not None:
        context = adjust(context)
    factory = entry.spec.load_factory()
    return factory(config, context), config, context


def _finite_scalar(value: Any, what: str) -> None:
    import torch

    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        raise ContractError(f"{what} must be a scalar tensor, got {value!r}")
    if not math.isfinite(float(value.detach())):
        raise ContractError(f"{what} is not finite: {float(value.detach())}")


def exercise(entry: RegisteredComponent, component: Any, context: BuildContext) -> None:
    """Check a built component's type and run it once on a tiny input; raise ContractError if it misbehaves."""
    import torch

    kind = entry.kind
    torch.manual_seed(0)
    if kind == "quantizer":
        exercise_quantizer(component)
    elif kind == "backbone":
        from lgvq_core.tokenizer import (
            Tokenizer,
        )  # lazy: imports torch; the contract's import and registration checks run without it

        _expect_type(component, Tokenizer)
        side = context.image_size or IMAGE_SIZE
        images = torch.rand(2, 3, side, side) * 2 - 1
        out = component(images)
        if out.recon.shape != images.shape:
            raise ContractError(f"recon has shape {tuple(out.recon.shape)}, the images {tuple(images.shape)}")
        latent = side // component.downsample
        if out.quant.shape[:2] != (2, component.code_dim) or tuple(out.quant.shape[-2:]) != (latent, latent):
            raise ContractError(
                f"quant has shape {tuple(out.quant.shape)}; expected (2, code_dim={component.code_dim}, "
                f"{latent}, {latent}) for {side}-pixel images and downsample {component.downsample}"
            )
        terms = component.generator_loss(images, out, 0, component.make_discriminator())
        _finite_scalar(terms.get("total"), "generator_loss()['total']")
        terms["total"].backward()
        if not any(p.grad is not None for p in component.parameters() if p.requires_grad):
            raise ContractError("generator_loss()['total'] gives no gradient to any parameter")
    elif kind == "text_encoder":
        from lgvq_core.text_encoder import (
            TextEncoder,
        )  # lazy: imports torch; the contract's import and registration checks run without it

        _expect_type(component, TextEncoder)
        features = component.encode(list(CAPTIONS[:2]))
        length = component.context_length
        expected = {
            "ids": (2, length),
            "pad_mask": (2, length),
            "word_mask": (2, length),
            "token_states": (2, length, component.width),
            "sentence": (2, component.embed_dim),
        }
        for name, shape in expected.items():
            got = tuple(getattr(features, name).shape)
            if got != shape:
                raise ContractError(f"encode() returned {name} of shape {got}, expected {shape}")
        if tuple(component.token_embedding.shape) != (component.vocab_size, component.width):
            raise ContractError(
                f"token_embedding has shape {tuple(component.token_embedding.shape)}, expected (V, W) = "
                f"({component.vocab_size}, {component.width})"
            )
        ids = features.ids[:1].long()
        with torch.no_grad():
            rows = component.embed_ids(ids)
            alone = component.embed_ids(ids.flip(1)).flip(1)  # every id at another position
        if tuple(rows.shape) != (1, length, component.width) or not torch.allclose(rows, alone, atol=1e-6):
            raise ContractError(
                "embed_ids() must give each id its embedding-layer row, whatever its position (B×L×W, no "
                "position embedding): the token-embedding inputs of masked-text and relation rely on it"
            )
    elif kind == "alignment_loss":
        from lgvq_core.alignment.base import (
            AlignmentInputs,
            AlignmentLoss,
        )  # lazy: imports torch; the contract's import and registration checks run without it
        from lgvq_core.alignment.code_vit import (
            CodeViT,
        )  # lazy: imports torch; the contract's import and registration checks run without it

        _expect_type(component, AlignmentLoss)
        encoder = context.text_encoder
        code_dim = context.code_dim or 16
        h, w = context.latent_size or (4, 4)
        quant = torch.randn(2, code_dim, h, w, requires_grad=True)
        tokens = global_embedding = None
        if component.uses_code_vit:
            vit = CodeViT(code_dim, (h, w), encoder.width, encoder.embed_dim, layers=1, heads=1)
            tokens = vit(quant)
            global_embedding = vit.global_embedding(tokens)
        codebook = torch.randn(32, code_dim)
        inputs = AlignmentInputs(
            quant=quant,
            text=encoder.encode(list(CAPTIONS[:2])),
            vit_tokens=tokens,
            codebook=codebook,
            indices=torch.randint(32, (2, h, w)),
            text_encoder=encoder,
            vit_global=global_embedding,
        )
        _finite_scalar(component(inputs), "the alignment loss")
    elif kind == "dataset":
        from lgvq_core.data.base import (
            CaptionedImages,
        )  # lazy: imports torch; the contract's import and registration checks run without it

        _expect_type(component, CaptionedImages)
        if len(component) < 1:
            raise ContractError("the dataset is empty")
        for key in (0, (0, 1234)):
            item = component[key]
            image = item.get("image")
            channels = getattr(component, "in_channels", 3)
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != channels:
                raise ContractError(f"item {key!r} has image {image!r}; expected a {channels}×h×w tensor")
            if float(image.min()) < -1.0 - 1e-6 or float(image.max()) > 1.0 + 1e-6:
                raise ContractError(f"item {key!r} has pixel values outside [-1, 1]")
            if not isinstance(item.get("caption"), str) or not item["caption"]:
                raise ContractError(f"item {key!r} has no caption: {item.get('caption')!r}")
        declared = frozenset(getattr(entry.spec.config_cls, "annotation_kinds", frozenset()))
        if component.annotation_kinds() != declared:
            raise ContractError(
                f"the dataset has annotations {sorted(component.annotation_kinds())} but its config class declares "
                f"annotation_kinds = {sorted(declared)}; make them the same (lgvq check reads the declaration)"
            )
        _exercise_annotations(component)
    elif kind == "task":
        if not callable(getattr(component, "run", None)):
            raise ContractError(f"a task must have run(model, data, out_dir); {component!r} has none")
    elif kind == "downstream":
        _exercise_downstream(component, context)
    elif kind == "callback":
        problems = hook_problems(component)
        if problems:
            raise ContractError("the callback's hooks are wrong:\n" + "\n".join(problems))


def code_dataset(config: Any, registry: Registry, context: BuildContext) -> Any:
    """Random codes of 8 ``shapes`` images, itemised as the model's config asks (``unit``,
    ``annotations``): a downstream model meets the batches a real run gives it."""
    import torch

    from lgvq_core.data.codes import (
        CodeDataset,
    )  # lazy: imports torch; the contract's import and registration checks run without it

    images = registry.build(
        "dataset", {"type": "shapes", "image_size": IMAGE_SIZE, "num_train": 8, "num_val": 2}, "$.data", context
    )
    frozen = context.frozen_tokenizer
    generator = torch.Generator().manual_seed(0)
    codes = {
        "indices": torch.randint(frozen.codebook_size, (len(images), *frozen.grid), generator=generator),
        "valid": torch.ones(len(images), dtype=torch.bool),
    }
    unit = getattr(config, "unit", None)
    annotations = getattr(config, "annotations", None)
    wanted = sorted(annotations()) if callable(annotations) else []
    return CodeDataset(codes, images, [a for a in wanted if a == "segmentation"], unit() if callable(unit) else "image")


def _exercise_downstream(model: Any, context: BuildContext) -> None:
    """One loss on a real batch of random codes (with text states), its gradient, its groups."""
    data = context.train_data
    batch: dict[str, Any] = data.collate([data[(i, i)] for i in range(2)])
    if context.text_encoder is not None:
        features = context.text_encoder.encode(list(batch.get("text", batch["caption"])))
        batch.update(text_states=features.token_states, text_pad=features.pad_mask)
    terms = model.training_loss(batch)
    if not isinstance(terms, dict) or "loss" not in terms:
        raise ContractError(f"training_loss must return a dict with 'loss'; got {type(terms).__name__}")
    for name, value in terms.items():
        _finite_scalar(value, f"training_loss()[{name!r}]")
    terms["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not any(p.grad is not None for p in trainable):
        raise ContractError("training_loss()['loss'] gives no gradient to any parameter")
    grouped = [p for group in model.param_groups(0.01) for p in group["params"]]
    if len(grouped) != len({id(p) for p in grouped}) or {id(p) for p in grouped} != {id(p) for p in trainable}:
        raise ContractError("param_groups() must hold every trainable parameter exactly once")


def _exercise_annotations(dataset: Any) -> None:
    """Each declared annotation kind of item 0 has the documented type, for both key kinds."""
    import torch

    for key in (0, (0, 1234)):
        if "segmentation" in dataset.annotation_kinds():
            labels = dataset.segmentation(key)
            size = dataset.image_size
            if labels.dtype != torch.long or tuple(labels.shape) != (size, size):
                raise ContractError(
                    f"segmentation({key!r}) is {labels.dtype} {tuple(labels.shape)}; expected long {size}×{size}"
                )
            if int(labels.min()) < 0 or int(labels.max()) >= len(dataset.segmentation_classes()):
                raise ContractError(f"segmentation({key!r}) has class ids outside segmentation_classes()")
        if "questions" in dataset.annotation_kinds():
            if not all(isinstance(q, Question) for q in dataset.questions(key)):
                raise ContractError(f"questions({key!r}) must be a list of lgvq_core.data.annotations.Question")
        if "referring" in dataset.annotation_kinds():
            if not all(isinstance(r, Referring) for r in dataset.referring(key)):
                raise ContractError(f"referring({key!r}) must be a list of lgvq_core.data.annotations.Referring")
        if "attributes" in dataset.annotation_kinds():
            classes = dataset.attribute_classes()
            if not classes or not all(
                isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)
                for names in classes.values()
            ):
                raise ContractError("attribute_classes() must map each attribute to a non-empty tuple of class names")
            found = dataset.attributes(key)
            if set(found) != set(classes):
                raise ContractError(f"attributes({key!r}) has keys {sorted(found)}; expected {sorted(classes)}")
            bad = {name: v for name, v in found.items() if not (isinstance(v, int) and 0 <= v < len(classes[name]))}
            if bad:
                raise ContractError(f"attributes({key!r}) has class indices outside attribute_classes(): {bad}")


def exercise_quantizer(quantizer: Any) -> None:
    """The quantizer contract, on a 2×D×4×4 input: shapes, index dtype and range, codebook, decode
    round trip, gradient through ``quant``, determinism in eval mode."""
    import torch

    from lgvq_core.quantizers.base import (
        Quantizer,
        index_problem,
    )  # lazy: imports torch; the contract's import and registration checks run without it

    _expect_type(quantizer, Quantizer)
    size, dim = int(quantizer.codebook_size), int(quantizer.dim)
    z = torch.randn(2, dim, 4, 4, requires_grad=True)
    out = quantizer(z)
    if out.quant.shape != z.shape:
        raise ContractError(f"quant has shape {tuple(out.quant.shape)}, z had {tuple(z.shape)}")
    indices = out.indices
    if indices.shape[0] != 2 or tuple(indices.shape[-2:]) != (4, 4) or indices.dim() not in (3, 4):
        raise ContractError(f"indices have shape {tuple(indices.shape)}; expected B×h×w or B×k×h×w")
    problem = index_problem(indices, size)
    if problem is not None:
        raise ContractError(problem)
    _finite_scalar(out.loss, "the quantizer loss")
    try:
        codebook = quantizer.codebook
    except Exception as exc:  # noqa: BLE001 - a missing or broken property is the finding
        raise ContractError(f"the codebook property fails: {type(exc).__name__}: {exc}") from exc
    if not isinstance(codebook, torch.Tensor) or tuple(codebook.shape) != (size, dim):
        shape = tuple(codebook.shape) if isinstance(codebook, torch.Tensor) else type(codebook).__name__
        raise ContractError(
            f"codebook is {shape}; expected a (codebook_size, dim) = ({size}, {dim}) tensor (the relation "
            "loss and the codebook statistics read it)"
        )
    if not out.quant.requires_grad:
        raise ContractError("quant carries no gradient: use the straight-through z + (z_q - z).detach()")
    out.quant.pow(2).sum().backward()
    if z.grad is None or not bool(z.grad.abs().sum() > 0):
        raise ContractError("no gradient reaches z through quant: use the straight-through z + (z_q - z).detach()")
    # In eval mode nothing updates the codebook (EMA, re-anchoring), so the codes can be compared.
    quantizer.eval()
    with torch.no_grad():
        probe = torch.randn(2, dim, 4, 4)
        first, second = quantizer(probe), quantizer(probe)
        decoded = quantizer.decode_indices(first.indices)
    if decoded.shape != first.quant.shape:
        raise ContractError(f"decode_indices gives {tuple(decoded.shape)}, quant is {tuple(first.quant.shape)}")
    if not torch.allclose(decoded, first.quant, atol=1e-4, rtol=1e-4):
        error = float((decoded - first.quant).abs().max())
        raise ContractError(
            f"decode_indices(indices) differs from quant by up to {error:.3g} (eval mode): the codes a downstream "
            "model decodes are not the codes the tokenizer trained on"
        )
    if not torch.equal(first.indices, second.indices) or not torch.equal(first.quant, second.quant):
        raise ContractError("two calls in eval mode on the same input give different codes; eval must be deterministic")


def _expect_type(component: Any, base: type) -> None:
    if not isinstance(component, base):
        raise ContractError(
            f"the factory returned {type(component).__module__}.{type(component).__qualname__}, "
            f"not a {base.__module__}.{base.__qualname__}"
        )


# ------------------------------------------------------------------------------------------
# the pytest suite
# ------------------------------------------------------------------------------------------
def _collect_components(plugin: str) -> list[tuple[str, str]]:
    try:
        return [(entry.kind, entry.name) for entry in plugin_components(plugin)]
    except Exception:  # noqa: BLE001 - test_loads_through_entry_point reports it
        return []


class PluginContract:
    """Subclass in a test module and set :attr:`plugin` to the plugin's entry-point name."""

    #: The entry-point name of the plugin under test.
    plugin: str = ""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "component" not in metafunc.fixturenames and "backbone" not in metafunc.fixturenames:
            return
        found = _collect_components(self.plugin)
        if "backbone" in metafunc.fixturenames:
            found = [item for item in found if item[0] == "backbone"]
            params = [pytest.param(item, id=item[1]) for item in found]
            name, what = "backbone", "no backbone"
        else:
            params = [pytest.param(item, id=f"{item[0]}:{item[1]}") for item in found]
            name, what = "component", "no component (or could not be loaded)"
        if not params:
            params = [pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"{self.plugin!r} registers {what}"))]
        metafunc.parametrize(name, params)

    # -- fixtures ---------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def own_registry(cls) -> Registry:
        """The plugin alone."""
        return Registry(load_plugin(cls.plugin))

    @pytest.fixture(scope="class")
    @classmethod
    def full_registry(cls) -> Registry:
        """Every installed plugin (failures recorded, not raised), as a user would have them."""
        return Registry(full_manager())

    @pytest.fixture
    def entry(self, own_registry: Registry, component: tuple[str, str]) -> RegisteredComponent:
        kind, name = component
        return own_registry.get(kind, name)

    # -- the plugin ------------------------------------------------------------------------
    def test_plugin_is_named(self) -> None:
        assert self.plugin, f'set `plugin = "<entry-point name>"` on {type(self).__name__}'

    def test_loads_through_entry_point(self) -> None:
        manager = load_plugin(self.plugin)
        assert self.plugin in manager.infos
        Registry(manager)  # strict: a registration hook that raises or returns a non-spec fails here

    def test_imports_without_torch(self) -> None:
        problem = torch_import_problem(plugin_module(self.plugin))
        assert problem is None, problem

    def test_hooks_are_known_and_well_formed(self) -> None:
        module = importlib.import_module(plugin_module(self.plugin))
        problems = hook_problems(module)
        assert not problems, "\n".join(problems)

    # -- each component ----------------------------------------------------------------------
    def test_spec_is_complete(self, entry: RegisteredComponent) -> None:
        problems = spec_problems(entry)
        assert not problems, "\n".join(problems)

    def test_name_is_not_claimed_by_another_plugin(self, entry: RegisteredComponent, full_registry: Registry) -> None:
        clash = full_registry.conflicts[entry.kind].get(normalize_name(entry.name))
        if clash:
            owners = ", ".join(f"{e.distribution} (plugin {e.plugin!r})" for e in clash)
            pytest.fail(f"{entry.kind} {entry.name!r} is registered by several plugins: {owners}")

    def test_config_fields_are_documented(self, entry: RegisteredComponent) -> None:
        missing = undocumented_fields(entry.spec.config_cls)
        assert not missing, (
            f"{entry.spec.config_cls.__qualname__} fields without a doc: {', '.join(missing)}; "
            'declare them as option(default, "what it does")'
        )

    def test_config_defaults_have_their_declared_types(self, entry: RegisteredComponent) -> None:
        problems = default_type_problems(entry.spec.config_cls)
        assert not problems, "\n".join(problems)

    def test_schema_renders_every_field(self, entry: RegisteredComponent) -> None:
        problem = schema_problem(entry)
        assert problem is None, problem

    def test_config_round_trips_through_toml(self, entry: RegisteredComponent, own_registry: Registry) -> None:
        problem = round_trip_problem(entry, own_registry)
        assert problem is None, problem

    def test_config_rejects_unknown_key(self, entry: RegisteredComponent, own_registry: Registry) -> None:
        problem = unknown_key_problem(entry, own_registry)
        assert problem is None, problem

    def test_default_quantizer_is_a_valid_table(self, backbone: tuple[str, str], full_registry: Registry) -> None:
        entry = full_registry.get(*backbone)
        problem = default_quantizer_problem(entry, full_registry)
        assert problem is None, problem

    def test_factory_imports(self, entry: RegisteredComponent) -> None:
        factory = entry.spec.load_factory()
        assert callable(factory), f"{entry.spec.factory} is not callable"

    def test_builds_on_cpu_and_runs(
        self, entry: RegisteredComponent, full_registry: Registry, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        reason = getattr(entry.spec.config_cls, "contract_skip_build", None)
        if reason:
            pytest.skip(f"{entry.kind} {entry.name!r} is not built by the contract: {reason}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
        component, _, context = build_component(entry, full_registry, str(tmp_path))
        exercise(entry, component, context)


# ------------------------------------------------------------------------------------------
# python -m lgvq_core.testing.contract PLUGIN...
# ------------------------------------------------------------------------------------------
def _suite_source(plugins: Iterable[str]) -> str:
    lines = ["from lgvq_core.testing.contract import PluginContract", ""]
    for i, name in enumerate(plugins):
        class_name = "Test_" + "".join(c if c.isalnum() else "_" for c in name) + f"_{i}"
        lines += ["", f"class {class_name}(PluginContract):", f"    plugin = {name!r}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the contract on the named plugins (all installed ones with ``--all``); extra args go to pytest."""
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1 :]
    if args == ["--all"]:
        args = plugin_names()
    if not args or any(a.startswith("-") for a in args):
        print("usage: python -m lgvq_core.testing.contract PLUGIN [PLUGIN ...] | --all [-- PYTEST ARGS]")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="lgvq-contract-") as folder:
        suite = os.path.join(folder, "test_lgvq_contract.py")
        with open(suite, "w", encoding="utf-8") as handle:
            handle.write(_suite_source(args))
        ini = os.path.join(folder, "pytest.ini")
        with open(ini, "w", encoding="utf-8") as handle:
            handle.write("[pytest]\n")
        return int(pytest.main([suite, "-c", ini, "--rootdir", folder, "-p", "no:cacheprovider", "-rfEs", *extra]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
