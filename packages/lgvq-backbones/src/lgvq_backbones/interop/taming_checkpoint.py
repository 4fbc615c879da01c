"""taming-transformers and official LG-VQ checkpoints -> lgvq weights and a run file.

Both projects save a PyTorch Lightning checkpoint of a ``VQModel`` whose state dict is
``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``, ``quantize.*`` and the loss
module ``loss.discriminator.*`` (PatchGAN) / ``loss.perceptual_loss.*`` (LPIPS). The official LG-VQ
model adds its frozen CLIP (``clip_model.*``) and its alignment heads (``mskTransformer.*``,
``mask_learned_parameter``, ``mlm_layer.*``, ``wrsr_fc.*``); ``LG_cvq`` quantizes with CVQ, whose
usage EMA is the buffer ``quantize.embed_prob``.

lgvq's ``vqgan`` backbone uses taming's module names for the encoder and decoder, so the mapping is
a list of prefix renames (:data:`TAKEN`) and prefixes left out with a reason (:data:`IGNORED`). A
key matched by neither refuses the import, as does a missing or differently shaped weight
(:mod:`lgvq_core.interop.importing` checks the result against the model the run file builds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lgvq_backbones.interop.importers import TamingImportConfig
from lgvq_core.api import (
    CheckpointError,
    ConfigError,
    ImportedCheckpoint,
    LgvqError,
    has_unread,
    plain_data,
    read_lightning_checkpoint,
)

#: Source prefix (or whole key) -> lgvq prefix. Order matters only where one prefix starts another.
TAKEN: list[tuple[str, str]] = [
    ("encoder.", "tokenizer.encoder."),
    ("decoder.", "tokenizer.decoder."),
    ("quant_conv.", "tokenizer.quant_conv."),
    ("post_quant_conv.", "tokenizer.post_quant_conv."),
    ("quantize.embedding.weight", "tokenizer.quantizer.embedding.weight"),
    ("quantize.embed_prob", "tokenizer.quantizer.code_usage"),  # CVQ's usage EMA (LG_cvq)
    ("loss.discriminator.", "discriminator."),
]

_LPIPS = (
    "LPIPS (frozen VGG16 + linear heads): lgvq keeps LPIPS out of checkpoints; give [model.backbone] "
    "perceptual_weights (a .pth/.safetensors of these weights) to train with it"
)
_ALIGNMENT = (
    "official LG-VQ alignment head: lgvq's [[alignment]] losses have their own heads, trained from scratch "
    "when fine-tuning with train.init_from"
)
#: Source prefix -> why lgvq does not take it.
IGNORED: dict[str, str] = {
    "loss.perceptual_loss.": _LPIPS,
    "clip_model.": "the official model's frozen CLIP: lgvq's text encoder is its own component ([text_encoder]), "
    "never saved in checkpoints",
    "mskTransformer.": _ALIGNMENT,
    "mask_learned_parameter": _ALIGNMENT,
    "mlm_layer.": _ALIGNMENT,
    "wrsr_fc.": _ALIGNMENT,
    "colorize": "taming's random colouring of segmentation labels for logged images, not a model weight",
}
_NO_DISCRIMINATOR = "discriminator = false: the discriminator is left out of the run"

#: model targets each importer accepts -> lgvq backbone.
TARGETS: dict[str, dict[str, str]] = {
    "taming": {"taming.models.vqgan.VQModel": "vqgan"},
    "lg-vq": {"taming.models.LG_vqgan.VQModel": "vqgan", "taming.models.LG_cvq.VQModel": "cvq"},
}

_DD_BACKBONE = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "dropout")
_LOSS_BACKBONE = {
    "disc_start": "disc_start",
    "disc_weight": "disc_weight",
    "disc_factor": "disc_factor",
    "disc_loss": "disc_loss",
    "disc_num_layers": "disc_layers",
    "disc_ndf": "disc_ndf",
    "codebook_weight": "codebook_weight",
    "perceptual_weight": "perceptual_weight",
}
_LG_HEAD_KEYS = (
    "drop_prob",
    "clip_text_truncate_len",
    "mask_transformer_layer",
    "mask_transformer_head",
    "text_mask_ratio",
)
_LG_WEIGHTS = ("nceloss_weight", "mskloss_weight", "wrsloss_weight")
_BUILD_ONLY = ("ckpt_path", "ignore_keys", "image_key", "monitor", "sane_index_shape", "colorize_nlabels")


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """The YAML config at ``path`` (``yaml.safe_load``: data only, no tags that build objects)."""
    try:
        import yaml  # lazy: the `import` extra
    except ImportError:
        raise LgvqError(
            "reading a YAML --config needs PyYAML: pip install 'lgvq-backbones[import]' (or pip install pyyaml)"
        ) from None
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"--config: file not found: {path}"]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([f"--config: {path} is not readable YAML ({' '.join(str(exc).split())})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"--config: {path} holds no mapping (expected model: target/params)"])
    return data


def model_section(config: Mapping[str, Any], where: str) -> tuple[str | None, dict[str, Any], float | None]:
    """``(target, params, base_learning_rate)`` of a whole YAML config (``model:``) or of a checkpoint's
    ``hyper_parameters`` (the model's constructor arguments)."""
    if "model" in config:
        model = config["model"]
        if not isinstance(model, Mapping) or not isinstance(model.get("params"), Mapping):
            raise ConfigError([f"{where}: model.params is missing or not a mapping"])
        return model.get("target"), dict(model["params"]), model.get("base_learning_rate")
    if "ddconfig" in config:
        return None, dict(config), None
    raise ConfigError([f"{where}: neither model.params (a taming YAML config) nor ddconfig (hyper_parameters)"])


def _need(params: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in params:
        raise ConfigError([f"{where}: {key} is missing"])
    return params[key]


def run_file_from_config(
    config: Mapping[str, Any], backbone: str, options: TamingImportConfig, where: str, has_discriminator: bool
) -> tuple[dict[str, Any], int, int, dict[str, str]]:
    """The lgvq run file for a taming-style model config: ``(tables, image_size, in_channels, unmapped)``.

    ``unmapped`` names every config key with no lgvq equivalent and says why.
    """
    target, params, base_lr = model_section(config, where)
    prefix = "model.params." if "model" in config else ""
    unmapped: dict[str, str] = {}
    problems: list[str] = []
    dd = dict(_need(params, "ddconfig", where))
    backbone_table: dict[str, Any] = {"type": backbone, "norm_groups": 32}  # taming's Normalize: 32 groups
    for key in _DD_BACKBONE:
        backbone_table[key] = list(dd[key]) if isinstance(dd.get(key), list | tuple) else _need(dd, key, where)
    image_size = int(_need(dd, "resolution", where))
    in_channels = int(_need(dd, "in_channels", where))
    if int(dd.get("out_ch", in_channels)) != in_channels:
        problems.append(f"{where}: {prefix}ddconfig.out_ch = {dd['out_ch']} differs from in_channels = {in_channels}")
    if dd.get("double_z", False):
        problems.append(f"{where}: {prefix}ddconfig.double_z = true is a KL autoencoder's encoder, not a VQ model")
    for key in dd:
        if key in _LG_HEAD_KEYS:
            unmapped[f"{prefix}ddconfig.{key}"] = _ALIGNMENT
        elif key not in (*_DD_BACKBONE, "resolution", "in_channels", "out_ch", "double_z"):
            unmapped[f"{prefix}ddconfig.{key}"] = "no lgvq equivalent"

    codebook_size, dim = int(_need(params, "n_embed", where)), int(_need(params, "embed_dim", where))
    if backbone == "cvq":  # LG_cvq: CVQVectorQuantiser(n_embed, embed_dim, beta=0.25), its defaults
        quantizer = dict(type="cvq", codebook_size=codebook_size, dim=dim, beta=0.25, beta_placement="commitment")
        quantizer.update(distance="l2", anchor="probrandom", first_batch=False, contras_loss=True)
    else:  # VectorQuantizer2(beta=0.25, legacy=True): beta on the codebook term
        quantizer = dict(type="vq", codebook_size=codebook_size, dim=dim, beta=0.25, beta_placement="codebook")
    if params.get("remap") is not None:
        problems.append(f"{where}: {prefix}remap is set: remapped code indices are not supported; import without it")
    for key in params:
        if key in _BUILD_ONLY:
            unmapped[f"{prefix}{key}"] = "how the source built or logged the model; not part of the model"
        elif key not in ("ddconfig", "lossconfig", "n_embed", "embed_dim", "remap"):
            unmapped[f"{prefix}{key}"] = "no lgvq equivalent"

    loss = params.get("lossconfig") or {}
    loss_target = str(loss.get("target", ""))
    for key, value in dict(loss.get("params") or {}).items():
        name = f"{prefix}lossconfig.params.{key}"
        if key in _LOSS_BACKBONE:
            backbone_table[_LOSS_BACKBONE[key]] = value
        elif key in _LG_WEIGHTS:
            unmapped[name] = (
                "LG-VQ alignment weight: the imported run has no [[alignment]]; give it as that loss's weight "
                "when fine-tuning with train.init_from"
            )
        elif key == "disc_in_channels":
            if int(value) != in_channels:
                problems.append(f"{where}: {name} = {value} differs from ddconfig.in_channels = {in_channels}")
        elif key == "pixelloss_weight" and float(value) == 1.0:
            pass  # lgvq's L1 term has weight 1 too
        elif key in ("use_actnorm", "disc_conditional") and value:
            if has_discriminator and options.discriminator:
                problems.append(
                    f"{where}: {name} = true: lgvq's PatchGAN has neither ActNorm nor a conditional input; "
                    "import with --set discriminator=false"
                )
        elif key in ("use_actnorm", "disc_conditional"):
            pass  # false: lgvq's PatchGAN as it is
        else:
            unmapped[name] = "no lgvq equivalent"
    if "perceptual_weight" not in backbone_table and "VQLPIPSWithDiscriminator" in loss_target:
        backbone_table["perceptual_weight"] = 1.0
    if problems:
        raise ConfigError(problems)
    tables: dict[str, Any] = {
        "run": {"name": options.name},
        "model": {"backbone": backbone_table, "quantizer": quantizer},
        "data": {"type": "shapes", "image_size": image_size},
    }
    if base_lr is not None:
        tables["train"] = {"base_lr": float(base_lr)}
    for section in config:
        if section != "model":
            unmapped[section] = (
                "the source's data and trainer settings; the imported run's [data] is a synthetic shapes set "
                "at the model's resolution: evaluate on yours with `lgvq eval RUN_DIR --set data.type=...`"
                if section in ("data", "dataset", "lightning")
                else "no lgvq equivalent"
            )
    return tables, image_size, in_channels, unmapped


# ------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------
def map_state_dict(
    state_dict: Mapping[str, Any], take_discriminator: bool
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """``(weights, sources, ignored)``: every key renamed by :data:`TAKEN` or left out by :data:`IGNORED`.

    A key matched by neither refuses the import, naming it: lgvq never drops weights it does not know.
    """
    weights: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        reason = next((why for start, why in IGNORED.items() if key.startswith(start)), None)
        if reason is not None:
            ignored[key] = reason
            continue
        if key.startswith("loss.discriminator.") and not take_discriminator:
            ignored[key] = _NO_DISCRIMINATOR
            continue
        rename = next(((s, t) for s, t in TAKEN if key == s or (s.endswith(".") and key.startswith(s))), None)
        if rename is None:
            unknown.append(key)
            continue
        target = rename[1] + key[len(rename[0]) :]
        weights[target] = tensor
        sources[target] = key
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} state_dict key(s) lgvq does not know how to import: {', '.join(unknown[:6])}"
            f"{', ...' if len(unknown) > 6 else ''}; this model is not a VQModel lgvq reads (taming VQModel, "
            "LG_vqgan, LG_cvq)"
        )
    return weights, sources, ignored


class TamingImporter:
    """``lgvq import taming|lg-vq``: read the checkpoint and its config, map keys and config."""

    def __init__(self, options: TamingImportConfig, format_name: str, log: Callable[[str], None]) -> None:
        self.options = options
        self.format_name = format_name
        self.log = log

    def convert(self, checkpoint: str | Path) -> ImportedCheckpoint:
        checkpoint = Path(checkpoint).expanduser()
        data = read_lightning_checkpoint(checkpoint)
        state_dict = data.get("state_dict")
        if not isinstance(state_dict, Mapping) or not state_dict:
            raise CheckpointError(
                f"{checkpoint}: no state_dict (top-level keys: {', '.join(map(str, data)) or 'none'}); "
                "expected a PyTorch Lightning checkpoint"
            )
        config, where = self._config(data, checkpoint)
        backbone = self._backbone(config, state_dict, where)
        has_discriminator = any(k.startswith("loss.discriminator.") for k in state_dict)
        tables, image_size, in_channels, unmapped = run_file_from_config(
            config, backbone, self.options, where, has_discriminator
        )
        weights, sources, ignored = map_state_dict(state_dict, self.options.discriminator)
        kept = {}
        if backbone == "cvq":
            kept["tokenizer.quantizer.initialised"] = (
                "lgvq's first_batch flag (the official CVQ keeps it in a plain attribute, not saved); "
                "first_batch = false does not read it"
            )
        ignored.update({f"{key} (checkpoint entry)": why for key, why in self._other_entries(data).items()})
        if "hyper_parameters" in data and self.options.config is not None:
            ignored["hyper_parameters (checkpoint entry)"] = "not read: --config gives the model config"
        return ImportedCheckpoint(
            run_file=tables,
            weights=weights,
            sources=sources,
            image_size=image_size,
            in_channels=in_channels,
            ignored=ignored,
            kept_initial=kept,
            unmapped_config=unmapped,
            step=int(data.get("global_step") or 0),
            source={
                "format": self.format_name,
                "checkpoint": str(checkpoint.resolve()),
                "config": where,
                "backbone": backbone,
                "pytorch_lightning_version": str(data.get("pytorch-lightning_version", "unknown")),
                "epoch": data.get("epoch"),
                "global_step": data.get("global_step"),
            },
        )

    def _config(self, data: Mapping[str, Any], checkpoint: Path) -> tuple[dict[str, Any], str]:
        if self.options.config is not None:
            return read_yaml_config(self.options.config), str(Path(self.options.config).expanduser())
        hyper = plain_data(data.get("hyper_parameters"))
        if isinstance(hyper, Mapping) and hyper and not has_unread(hyper):
            return dict(hyper), f"{checkpoint} (hyper_parameters)"
        why = "has no hyper_parameters" if not hyper else "keeps its hyper_parameters as objects lgvq does not read"
        raise ConfigError(
            [f"--config: {checkpoint} {why}; pass the YAML config it was trained with: --config CONFIG.yaml"]
        )

    def _backbone(self, config: Mapping[str, Any], state_dict: Mapping[str, Any], where: str) -> str:
        target, _, _ = model_section(config, where)
        accepted = TARGETS[self.format_name]
        if target is not None:
            if target not in accepted:
                others = [f for f, targets in TARGETS.items() if target in targets and f != self.format_name]
                hint = f"; use `lgvq import {others[0]}`" if others else ""
                raise ConfigError(
                    [f"{where}: model.target {target} is not a model `lgvq import {self.format_name}` reads "
                     f"({', '.join(accepted)}){hint}"]
                )  # fmt: skip
            backbone = accepted[target]
        else:
            backbone = "cvq" if "quantize.embed_prob" in state_dict else "vqgan"
        if (backbone == "cvq") != ("quantize.embed_prob" in state_dict):
            raise CheckpointError(
                f"{where}: the config names a {'CVQ' if backbone == 'cvq' else 'plain VQ'} model but the state_dict "
                f"{'lacks' if backbone == 'cvq' else 'has'} CVQ's quantize.embed_prob; is this the config of this checkpoint?"
            )
        return backbone

    @staticmethod
    def _other_entries(data: Mapping[str, Any]) -> dict[str, str]:
        """Top-level Lightning entries besides the weights, and why they are not taken."""
        reasons = {
            "optimizer_states": "optimizer state: fine-tuning starts new optimizers",
            "lr_schedulers": "learning-rate schedulers: lgvq's [train] sets its own",
            "callbacks": "Lightning callback state",
            "loops": "Lightning loop state",
            "hyper_parameters": "read as the model config",
        }
        skip = {"state_dict", "global_step", "epoch", "pytorch-lightning_version"}
        return {str(k): reasons.get(str(k), "Lightning bookkeeping") for k in data if str(k) not in skip}


def build_taming_importer(config: TamingImportConfig, context: Any) -> TamingImporter:
    return TamingImporter(config, "taming", getattr(context, "log", print))


def build_lgvq_importer(config: TamingImportConfig, context: Any) -> TamingImporter:
    return TamingImporter(config, "lg-vq", getattr(context, "log", print))
