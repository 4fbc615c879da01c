"""Find an open_clip model and its weights, local cache first, and build it.

``pretrained`` may be a tag, an ``hf-hub:`` name, a local file or ``"none"``; all four end in one
call to :func:`open_clip.create_model` with a local file, so open_clip's own loader (third-party
formats, OpenAI TorchScript files, ``module.`` prefixes) handles every checkpoint. Nothing is
fetched when the weights are cached; when they are not and downloads are off (``allow_download =
false`` or ``HF_HUB_OFFLINE=1``) the error says how to give a local file instead of waiting on the
network.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import attrs
import torch

from lgvq_core.api import CheckpointError, ConfigError
from lgvq_text_encoders.config import OpenClipConfig, names_a_file, read_open_clip_model_config

_HF_HUB = "hf-hub:"
_LOCAL_FILE = (
    'pretrained = "/path/to/open_clip_model.safetensors" (any open_clip .safetensors/.pt/.bin checkpoint of '
    "this model, e.g. the file from its model page, copied to this machine)"
)
_HINT = f"Give the weights as a local file instead: {_LOCAL_FILE}."


@attrs.frozen
class ResolvedModel:
    """What to hand to ``open_clip.create_model``, and the model config it will use."""

    name: str
    checkpoint: str | None
    model_config: dict[str, Any]
    quick_gelu: bool


def download_block(config: OpenClipConfig) -> str | None:
    """Why nothing may be fetched (the config, or an offline hub), or ``None`` when downloads are allowed."""
    if not config.allow_download:
        return "allow_download = false"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE=1"
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip and transformers
        return None
    return "HF_HUB_OFFLINE=1" if getattr(constants, "HF_HUB_OFFLINE", False) else None


def _register_config_file(path_text: str) -> str:
    """Make a model-config .json known to open_clip; return the name it is registered under."""
    import open_clip

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError([f"$.text_encoder.model: open_clip model-config file not found: {path}"])
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"$.text_encoder.model: cannot read the model-config file {path}: {exc}"]) from None
    if not isinstance(content, dict) or not all(key in content for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ConfigError(
            [f"$.text_encoder.model: {path} is not an open_clip model config (embed_dim, vision_cfg, text_cfg)"]
        )
    name = path.stem
    builtin = read_open_clip_model_config(name)
    if builtin is not None and builtin != content:
        raise ConfigError(
            [
                f"$.text_encoder.model: the config file {path} is named like open_clip's built-in model "
                f"{name!r} but differs from it; rename the file"
            ]
        )
    open_clip.add_model_config(path)
    return name


def _model_name(config: OpenClipConfig) -> str:
    import open_clip

    if config.pretrained.startswith(_HF_HUB):
        return config.pretrained
    if config.model.endswith(".json"):
        return _register_config_file(config.model)
    name = config.model.replace("/", "-")
    if open_clip.get_model_config(name) is None:
        known = open_clip.list_models()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            [
                f"$.text_encoder.model: unknown open_clip model {config.model!r}{hint} "
                "(see open_clip.list_models(), or give the path of a model-config .json file)"
            ]
        )
    return name


def _cached_hub_file(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) and os.path.isfile(found) else None


def _hub_weight_names(filename: str) -> list[str]:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    names = []
    if filename == HF_WEIGHTS_NAME:
        names.append(HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return [*names, filename]


def _cached_tag_file(tag_config: dict[str, Any]) -> str | None:
    """The local copy of a tag's weights, if open_clip or the hub cache already holds one."""
    from open_clip.constants import HF_WEIGHTS_NAME

    if tag_config.get("file"):
        return str(tag_config["file"])
    hub = tag_config.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        for name in _hub_weight_names(filename or HF_WEIGHTS_NAME):
            found = _cached_hub_file(repo, name)
            if found is not None:
                return found
    url = tag_config.get("url", "")
    if url:
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if candidate.is_file():
            return str(candidate)
    return None


def _tag_checkpoint(config: OpenClipConfig, name: str, tag_config: dict[str, Any]) -> str:
    import open_clip

    cached = _cached_tag_file(tag_config)
    if cached is not None:
        return cached
    what = f"the weights of open_clip {name!r} with pretrained tag {config.pretrained!r}"
    blocked = download_block(config)
    if blocked:
        raise CheckpointError(f"{what} are not in the local cache and downloads are off ({blocked}). {_HINT}")
    try:
        return open_clip.download_pretrained(tag_config)
    except Exception as exc:  # noqa: BLE001 - any network or hub failure ends the same way
        raise CheckpointError(f"could not fetch {what}: {exc}. {_HINT}") from exc


def _file_checkpoint(config: OpenClipConfig, name: str) -> str:
    import open_clip

    path = Path(config.pretrained).expanduser()
    if path.is_file():
        return str(path)
    if names_a_file(config.pretrained):
        raise CheckpointError(f"pretrained checkpoint file not found: {path}. {_HINT}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    known = f"its tags are: {', '.join(tags)}" if tags else "it has no pretrained tags in open_clip"
    raise ConfigError(
        [
            f"$.text_encoder.pretrained: {config.pretrained!r} is neither a pretrained tag of open_clip "
            f"model {name!r} ({known}) nor an existing file. {_HINT}"
        ]
    )


def _hub_model_config(config: OpenClipConfig) -> dict[str, Any]:
    import open_clip
    from open_clip.constants import HF_CONFIG_NAME

    repo = config.pretrained[len(_HF_HUB) :]
    blocked = download_block(config)
    if blocked and _cached_hub_file(repo, HF_CONFIG_NAME) is None:
        raise CheckpointError(
            f"the open_clip hub model {config.pretrained!r} is not in the local Hugging Face cache and downloads "
            f"are off ({blocked}). Give the weights as a local file instead: set model to its architecture name "
            f"and {_LOCAL_FILE}."
        )
    try:
        model_config = open_clip.get_model_config(config.pretrained)
    except Exception as exc:  # noqa: BLE001 - any network or hub failure ends the same way
        raise CheckpointError(
            f"could not fetch the config of {config.pretrained!r}: {exc}. Give the weights as a local file instead: "
            f"set model to its architecture name and {_LOCAL_FILE}."
        ) from exc
    if model_config is None:
        raise CheckpointError(f"{config.pretrained!r} has no open_clip model config ({HF_CONFIG_NAME})")
    return model_config


def resolve(config: OpenClipConfig) -> ResolvedModel:
    """Work out the model name, a local checkpoint (or none) and QuickGELU, fetching nothing cached."""
    import open_clip

    name = _model_name(config)
    tag_config: dict[str, Any] = {}
    checkpoint: str | None = None
    pretrained = config.pretrained
    if pretrained.startswith(_HF_HUB):
        model_config = _hub_model_config(config)
    else:
        model_config = open_clip.get_model_config(name)
        if pretrained.lower() != "none":
            tag_config = open_clip.get_pretrained_cfg(name, pretrained) or {}
            checkpoint = _tag_checkpoint(config, name, tag_config) if tag_config else _file_checkpoint(config, name)
    if config.quick_gelu is not None:
        quick_gelu = config.quick_gelu
    elif tag_config.get("quick_gelu"):
        quick_gelu = True
    else:
        quick_gelu = bool(model_config.get("quick_gelu", False))
    return ResolvedModel(name=name, checkpoint=checkpoint, model_config=model_config, quick_gelu=quick_gelu)


def check_supported(resolved: ResolvedModel) -> None:
    """Reject text towers this encoder cannot run in parts, before anything is built or fetched."""
    text_config = resolved.model_config.get("text_cfg", {})
    where = f"open_clip model {resolved.name!r}"
    reason = None
    if text_config.get("hf_model_name"):
        reason = f"its text tower is the Hugging Face model {text_config['hf_model_name']!r}"
    elif text_config.get("hf_tokenizer_name"):
        reason = f"it uses the Hugging Face tokenizer {text_config['hf_tokenizer_name']!r}"
    elif "multimodal_cfg" in resolved.model_config or text_config.get("embed_cls"):
        reason = "its text tower appends a class token (CoCa)"
    elif "siglip" in resolved.name.lower():
        reason = "it uses a SigLIP tokenizer"
    elif text_config.get("pool_type", "argmax") not in ("argmax", "eos"):
        reason = f"it pools the sentence from the {text_config['pool_type']!r} token, not the end-of-text token"
    if reason is not None:
        raise ConfigError(
            [
                f"$.text_encoder.model: {where} is not supported: {reason}. Supported: CLIP text towers with "
                "the CLIP BPE tokenizer (ViT-*, RN*, convnext_*, EVA*, ... with a plain text_cfg)"
            ]
        )


def build_open_clip_model(config: OpenClipConfig, resolved: ResolvedModel) -> torch.nn.Module:
    """The whole open_clip model on CPU with the resolved weights (the caller keeps only the text tower)."""
    import open_clip

    kwargs: dict[str, Any] = {"quick_gelu": resolved.quick_gelu}
    random_weights = resolved.checkpoint is None and not resolved.name.startswith(_HF_HUB)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return open_clip.create_model(
                resolved.name,
                pretrained=resolved.checkpoint,
                device="cpu",
                pretrained_image=False,
                pretrained_text=False,
                require_pretrained=not random_weights,
                **kwargs,
            )
    except (CheckpointError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip raises RuntimeError, KeyError, OSError ...
        from lgvq_core.api import describe_load_error

        source = resolved.checkpoint or resolved.name
        raise CheckpointError(
            f"could not load open_clip model {resolved.name!r} from {source}: {describe_load_error(exc)}. Check "
            "that the checkpoint belongs to this model config (and quick_gelu to how it was trained)."
        ) from None
