"""``code-probe``: how much a tokenizer's codes know about each image's attributes.

docs/method.md: Evaluation protocols.

An image's features are the code vectors of its code indices, ``quantizer.decode_indices(indices)``
(b D h w: the vectors the alignment losses shape), flattened to one D·h·w vector; a quantizer that
picks k codes per position gives the codebook rows of all k (k·D·h·w). Features are standardised
with the mean and standard deviation of the train features. Two probes predict the class of every
attribute the dataset declares (its ``attributes`` annotations, docs/datasets.md):

- ``linear``: one linear layer F -> sum of the class counts, one cross-entropy per attribute, summed.
  The summed loss splits into one term per attribute's rows and Adam scales every weight on its own,
  so this is one independent linear probe per attribute, fitted in one go. It starts at zero: the
  problem is convex, and only the batch order is left to the seed.
- ``mlp``: Linear(F -> H) -> ReLU -> Linear(H -> sum of the class counts): a hidden layer shared by
  the attributes with a head per attribute (one fit, not one per attribute); the hidden layer is
  drawn at random, the heads start at zero.

Both are scored on the validation split, beside the ``shuffled_labels`` control (the MLP, or the
linear probe when it is the only one, fitted on the same train features with the label rows
permuted across images and scored on the true val labels: when nothing but the image carries the
label it lands at chance, between guessing by the class shares and the majority rate) and the
val split's majority-class rate.

Every draw (the train subset, the MLP's initialisation, each probe's batches, the permutation)
comes from its own ``torch.Generator`` seeded from ``seed``, so a result repeats exactly and does
not depend on which probes are asked for; the global RNG is left as it was (encoding also runs
inside ``torch.random.fork_rng``, since a tokenizer's own code may draw).

The fitting pieces are meant for reuse: :func:`fit_attribute_probe` returns an
:class:`AttributeProbe` whose ``predict`` labels any features of the same kind, and
:func:`attribute_tv_distance` compares two sets of predictions attribute by attribute (e.g. the
codes of generated images against those of the validation images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.api import ATTRIBUTES, missing_annotation_message
from lgvq_tasks.config import CodeProbeConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.split import SplitBatch, batch_size_of, encode_codes, item_batches, split_batches, train_split

#: The probes :func:`fit_attribute_probe` can fit.
PROBE_KINDS: tuple[str, ...] = ("linear", "mlp")
#: Attribute name -> its class names (or just their number).
Classes = Mapping[str, Sequence[str] | int]

# One generator stream per purpose: the train subset, each probe kind, the permutation, the control.
_SUBSET, _PERMUTATION, _CONTROL = 0, 3, 4
_FIT = {"linear": 1, "mlp": 2}
#: Result key of the mean over attributes of each row (a probe kind, the control, the majority rate).
MEAN_KEYS = {
    "linear": "linear_mean",
    "mlp": "mlp_mean",
    "shuffled_labels": "shuffled_mean",
    "majority": "majority_mean",
}
#: n×F code vectors and, per attribute, n class indices.
Encoded = tuple[torch.Tensor, dict[str, torch.Tensor]]


def seeded_stream(seed: int, purpose: int) -> torch.Generator:
    """A CPU generator for one purpose (< 16) of the draws seeded by ``seed``."""
    return torch.Generator().manual_seed((seed * 16 + purpose) % (1 << 63))


def class_counts(classes: Classes) -> dict[str, int]:
    """Attribute name -> number of classes."""
    return {name: value if isinstance(value, int) else len(value) for name, value in classes.items()}


# ------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------
def _linear(fan_in: int, fan_out: int, generator: torch.Generator | None) -> nn.Linear:
    """A Linear layer drawn as torch's default, U(±1/√fan_in), but from ``generator``; all zeros without one."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)  # nothing drawn from the global RNG
    bound = fan_in**-0.5
    with torch.no_grad():
        for parameter in (layer.weight, layer.bias):
            if generator is None:
                parameter.zero_()
            else:
                parameter.uniform_(-bound, bound, generator=generator)
    return layer


@dataclass
class AttributeProbe:
    """A fitted probe: standardises features as its train features were, then reads every attribute."""

    kind: str
    network: nn.Module
    #: Per-feature mean and standard deviation of the train features (F each).
    mean: torch.Tensor
    std: torch.Tensor
    #: Attribute name -> number of classes, in the order of the network's outputs.
    classes: dict[str, int]
    #: The training loss of the last step (summed over the attributes).
    final_loss: float

    @torch.no_grad()
    def logits(self, features: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
        """Attribute name -> n×C logits for ``features`` (n×F)."""
        self.network.eval()
        parts = [
            self.network((features[start : start + batch_size].to(self.mean) - self.mean) / self.std)
            for start in range(0, features.shape[0], batch_size)
        ]
        joined = torch.cat(parts) if parts else features.new_zeros(0, sum(self.classes.values()))  # n ΣC
        return dict(zip(self.classes, joined.split(list(self.classes.values()), dim=1), strict=True))

    def predict(self, features: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
        """Attribute name -> predicted class index of each row of ``features`` (n×F)."""
        return {name: part.argmax(dim=1) for name, part in self.logits(features, batch_size).items()}


def fit_attribute_probe(
    features: torch.Tensor,
    labels: Mapping[str, torch.Tensor],
    classes: Classes,
    *,
    kind: str = "linear",
    hidden: int = 256,
    steps: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    generator: torch.Generator | None = None,
    progress: Callable[[int, torch.Tensor], None] | None = None,
) -> AttributeProbe:
    """Fit a ``linear`` or ``mlp`` probe from ``features`` (n×F) to the class of every attribute.

    ``labels`` maps each attribute of ``classes`` to n class indices. Adam with ``weight_decay`` as
    L2, ``steps`` steps of ``batch_size`` rows (epochs in random order; every row at each step when
    ``batch_size >= n``). The MLP's hidden layer and the batches draw from ``generator`` only (a
    CPU generator; seed 0 when not given), the read-out starts at zero; ``progress(step, loss)`` is
    called after each step.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind must be one of {', '.join(PROBE_KINDS)}, got {kind!r}")
    counts = class_counts(classes)
    features = features.float()
    rows, width = features.shape
    if rows == 0:
        raise ValueError("a probe needs at least one row of features")
    targets = []
    for name, count in counts.items():
        column = torch.as_tensor(labels[name], dtype=torch.long).to(features.device)
        if column.shape != (rows,):
            raise ValueError(f"labels of {name!r} have shape {tuple(column.shape)}; expected ({rows},)")
        if column.min() < 0 or column.max() >= count:
            raise ValueError(f"labels of {name!r} must lie in [0, {count})")
        targets.append(column)
    target = torch.stack(targets, dim=1)  # n A

    mean = features.mean(dim=0)
    std = features.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature stays 0
    inputs = (features - mean) / std

    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    outputs = sum(counts.values())
    # The read-out starts at zero (uniform predictions): the linear probe's problem is convex, so
    # only the batch order is left to chance.
    if kind == "linear":
        network: nn.Module = _linear(width, outputs, None)
    else:
        network = nn.Sequential(_linear(width, hidden, generator), nn.ReLU(), _linear(hidden, outputs, None))
    network = network.to(features.device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=weight_decay)
    sizes = list(counts.values())
    order, position = torch.empty(0, dtype=torch.long), 0
    loss = torch.zeros(())
    with torch.enable_grad():
        network.train()
        for step in range(1, steps + 1):
            if batch_size >= rows:
                batch = torch.arange(rows)
            else:
                if position + batch_size > order.numel():
                    order, position = torch.randperm(rows, generator=generator), 0
                batch = order[position : position + batch_size]
                position += batch_size
            batch = batch.to(features.device)
            logits = network(inputs[batch])  # b ΣC
            loss = sum(
                F.cross_entropy(part, target[batch, column]) for column, part in enumerate(logits.split(sizes, dim=1))
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(step, loss.detach())
    network.eval()
    return AttributeProbe(kind, network, mean, std, counts, float(loss.detach()))


# ------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------
def accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of rows where the predicted class is the true one."""
    return float((predicted.cpu() == truth.cpu()).double().mean()) if truth.numel() else 0.0


def class_distribution(labels: torch.Tensor, count: int) -> torch.Tensor:
    """The share of each of ``count`` classes among ``labels`` (float64, sums to 1)."""
    counted = torch.bincount(labels.cpu().long(), minlength=count).double()
    return counted / counted.sum().clamp_min(1)


def majority_rate(labels: torch.Tensor, count: int) -> float:
    """Accuracy of always answering the most frequent class of ``labels``."""
    return float(class_distribution(labels, count).max())


def attribute_tv_distance(
    pred_a: Mapping[str, torch.Tensor], pred_b: Mapping[str, torch.Tensor], classes: Classes
) -> dict[str, float]:
    """Total-variation distance, ½·Σ_c |p_a(c) − p_b(c)|, between two sets' class shares, per attribute.

    0 when both sets spread over an attribute's classes alike, 1 when they share no class.
    """
    return {
        name: float((class_distribution(pred_a[name], count) - class_distribution(pred_b[name], count)).abs().sum() / 2)
        for name, count in class_counts(classes).items()
    }


# ------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def code_vectors(tokenizer: Any, images: torch.Tensor) -> torch.Tensor:
    """b×F: the code vectors of each image's codes, flattened (F = D·h·w, or k·D·h·w with k codes per position)."""
    indices = encode_codes(tokenizer, images).indices
    quantizer = tokenizer.quantizer
    if indices.dim() == 3:
        vectors = quantizer.decode_indices(indices)  # b D h w
    else:
        vectors = quantizer.codebook[indices]  # b k h w D: every code of every position
    return vectors.flatten(1).float()


@torch.no_grad()
def vectors_of_codes(quantizer: Any, codes: torch.Tensor) -> torch.Tensor:
    """b×F code vectors of code indices (b h w, or b k h w), as :func:`code_vectors` gives for images."""
    codes = codes.long().to(quantizer.codebook.device)
    if codes.dim() == 3:
        return quantizer.decode_indices(codes).flatten(1).float()
    return quantizer.codebook[codes].flatten(1).float()


@torch.no_grad()
def attribute_gap(
    quantizer: Any,
    codes: Any,
    generated: torch.Tensor,
    train_images: int = 2048,
    steps: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """How far the attributes of ``generated`` codes are from those of the validation images' codes.

    ``codes`` is a downstream run's code data (``train_data`` and ``val_data`` with ``indices``, their
    image datasets with attributes). A linear probe is fitted on the codes of up to ``train_images``
    train images (every draw from generators seeded by ``seed``), then labels the validation codes
    and the generated ones: the result holds the total-variation distance of the two label
    distributions per attribute and their mean, and the probe's accuracy on the validation codes
    (how far its labels can be trusted).
    """
    train, val = codes["train"], codes["val"]
    classes = {name: tuple(values) for name, values in train.images.attribute_classes().items()}
    readable = torch.nonzero(train.valid, as_tuple=False).flatten()
    take = min(train_images, len(readable))
    chosen = readable[torch.randperm(len(readable), generator=seeded_stream(seed, _SUBSET))[:take]].sort().values
    features = vectors_of_codes(quantizer, train.indices[chosen])
    found = [train.images.attributes(int(i)) for i in chosen]
    labels = {name: torch.tensor([row[name] for row in found]) for name in classes}
    probe = fit_attribute_probe(
        features, labels, classes, kind="linear", steps=steps, generator=seeded_stream(seed, _FIT["linear"])
    )
    val_rows = torch.nonzero(val.valid, as_tuple=False).flatten()
    val_predicted = probe.predict(vectors_of_codes(quantizer, val.indices[val_rows]))
    truth = [val.images.attributes(int(i)) for i in val_rows]
    probe_accuracy = {
        name: accuracy(val_predicted[name], torch.tensor([row[name] for row in truth])) for name in classes
    }
    sample_predicted = probe.predict(vectors_of_codes(quantizer, generated))
    distance = attribute_tv_distance(sample_predicted, val_predicted, classes)
    return {
        "tv_distance": distance,
        "tv_mean": sum(distance.values()) / len(distance),
        "probe_val_accuracy": probe_accuracy,
        "probe": {"kind": "linear", "train_images": int(take), "steps": steps, "seed": seed},
    }


def missing_attributes(data: Any, task: str) -> str | None:
    """Why ``data`` cannot serve ``task`` (it has no attribute annotations), or ``None``."""
    name = getattr(data, "name", type(data).__name__)
    kinds = getattr(data, "annotation_kinds", None)
    if kinds is None:
        return f"{task} needs per-image attributes, and dataset {name!r} has no annotations interface"
    if ATTRIBUTES not in kinds():
        index = getattr(data, "annotation_index", None)  # set when the registry built the dataset
        having = index(ATTRIBUTES) if callable(index) else None
        return f"{task} needs per-image attributes: {missing_annotation_message(name, ATTRIBUTES, having)}"
    return None


def chosen_attributes(data: Any, wanted: Sequence[str], task: str) -> dict[str, tuple[str, ...]]:
    """The dataset's attribute classes, narrowed to ``wanted`` (all of them when empty)."""
    available = data.attribute_classes()
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise TaskError(
            f"{task}: unknown attribute(s) {', '.join(map(repr, unknown))}; dataset "
            f"{getattr(data, 'name', type(data).__name__)!r} has: {', '.join(available)}"
        )
    return {name: tuple(available[name]) for name in (wanted or available)}


def _features_and_labels(
    tokenizer: Any, data: Any, batches: Iterable[SplitBatch], names: Sequence[str], task: str
) -> Encoded:
    """n×F code vectors of the batches' images and, per attribute, their n class indices."""
    features: list[torch.Tensor] = []
    labels: dict[str, list[int]] = {name: [] for name in names}
    for batch in batches:
        features.append(code_vectors(tokenizer, batch.images))
        for index in batch.index:
            found = data.attributes(index)
            for name in names:
                labels[name].append(int(found[name]))
    if not features:
        raise TaskError(f"{task}: none of the {getattr(data, 'split', '')} images to encode could be read")
    return torch.cat(features), {name: torch.tensor(values, dtype=torch.long) for name, values in labels.items()}


def _reporter(task: str, what: str, steps: int) -> Callable[[int, torch.Tensor], None]:
    every = max(1, steps // 4)

    def report(step: int, loss: torch.Tensor) -> None:
        if step % every == 0 or step == steps:
            print(f"{task}: {what} step {step}/{steps} (loss {float(loss):.4f})", flush=True)

    return report


class CodeProbeTask:
    name = "code-probe"

    def __init__(self, config: CodeProbeConfig) -> None:
        self.config = config

    def requires(self, model: Any) -> str | None:
        """Refuse, before any work, a run whose dataset has no attributes."""
        train = model.train_data
        return None if train is None else missing_attributes(train, self.name)

    def _fit(
        self,
        kind: str,
        features: torch.Tensor,
        labels: Mapping[str, torch.Tensor],
        classes: Classes,
        stream: int,
        what: str,
    ) -> AttributeProbe:
        config = self.config
        return fit_attribute_probe(
            features,
            labels,
            classes,
            kind=kind,
            hidden=config.hidden,
            steps=config.steps,
            batch_size=config.probe_batch_size,
            lr=config.lr,
            weight_decay=config.weight_decay,
            generator=seeded_stream(config.seed, stream),
            progress=_reporter(self.name, what, config.steps),
        )

    @torch.no_grad()
    def _encode(self, model: Any, train: Any, data: Any, names: Sequence[str]) -> tuple[Encoded, Encoded]:
        """Code vectors and attribute labels of the chosen train images and of the validation split."""
        config, task = self.config, self.name
        tokenizer = model.tokenizer
        was_training = tokenizer.training
        tokenizer.eval()
        devices = [model.device] if torch.device(model.device).type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                take = min(config.train_images, len(train))
                chosen = torch.randperm(len(train), generator=seeded_stream(config.seed, _SUBSET))[:take]
                print(f"{task}: encoding {take} of {len(train)} train images", flush=True)
                batches = item_batches(
                    task,
                    train,
                    chosen.sort().values.tolist(),
                    batch_size_of(config, model),
                    model.device,
                    config.progress_every,
                    what="train batch",
                )
                fitted_on = _features_and_labels(tokenizer, train, batches, names, task)
                print(f"{task}: encoding the validation split", flush=True)
                scored_on = _features_and_labels(tokenizer, data, split_batches(task, data, model, config), names, task)
        finally:
            tokenizer.train(was_training)
        return fitted_on, scored_on

    def _accuracies(self, train: Encoded, val: Encoded, classes: Classes) -> dict[str, dict[str, float]]:
        """Row (probe kind, ``shuffled_labels``, ``majority``) -> attribute -> val accuracy."""
        config = self.config
        (train_features, train_labels), (val_features, val_labels) = train, val
        counts = class_counts(classes)

        def scored(probe: AttributeProbe) -> dict[str, float]:
            predicted = probe.predict(val_features)
            return {name: accuracy(predicted[name], val_labels[name]) for name in counts}

        rows = {
            kind: scored(self._fit(kind, train_features, train_labels, classes, _FIT[kind], f"{kind} probe"))
            for kind in config.probes
        }
        if config.shuffled_control:
            permutation = torch.randperm(train_features.shape[0], generator=seeded_stream(config.seed, _PERMUTATION))
            shuffled = {name: values[permutation] for name, values in train_labels.items()}
            control = self._fit(
                self.control_probe, train_features, shuffled, classes, _CONTROL, "shuffled-label control"
            )
            rows["shuffled_labels"] = scored(control)
        rows["majority"] = {name: majority_rate(val_labels[name], count) for name, count in counts.items()}
        return rows

    @property
    def control_probe(self) -> str:
        """The probe the shuffled-label control fits: the MLP (it can memorise the most) when it is asked for."""
        return "mlp" if "mlp" in self.config.probes else "linear"

    def run(self, model: Any, data: Any, out_dir: Path) -> dict[str, Any]:
        config, task = self.config, self.name
        reason = missing_attributes(data, task)
        if reason:
            raise TaskError(reason)
        train_data = train_split(model, task)
        classes = chosen_attributes(data, config.attributes, task)
        names = list(classes)
        train, val = self._encode(model, train_data, data, names)
        width = int(train[0].shape[1])
        print(
            f"{task}: {len(names)} attribute(s) from {width} code features; fitting "
            f"{' and '.join(config.probes)} probe(s) on {train[0].shape[0]} train images",
            flush=True,
        )
        rows = self._accuracies(train, val, classes)
        for name in names:
            shown = ", ".join(f"{row.replace('_', ' ')} {values[name]:.3f}" for row, values in rows.items())
            print(f"{task}: {name} ({len(classes[name])} classes): {shown}", flush=True)

        results: dict[str, Any] = {MEAN_KEYS[row]: sum(values.values()) / len(values) for row, values in rows.items()}
        results["attributes"] = {
            name: {**{row: values[name] for row, values in rows.items()}, "classes": list(classes[name])}
            for name in names
        }
        results.update(
            train_images=int(train[0].shape[0]),
            val_images=int(val[0].shape[0]),
            features=width,
            steps=config.steps,
            seed=config.seed,
        )
        if config.shuffled_control:
            results["control_probe"] = self.control_probe
        results["better"] = {
            **{MEAN_KEYS[kind]: "higher" for kind in config.probes},
            **{f"attributes.{name}.{kind}": "higher" for name in names for kind in config.probes},
        }
        return results


def build_code_probe(config: CodeProbeConfig, context: Any) -> CodeProbeTask:
    return CodeProbeTask(config)
