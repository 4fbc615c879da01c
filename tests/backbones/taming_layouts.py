"""Checkpoints in the exact layout taming-transformers and the official LG-VQ code save, for the import tests.

taming's VQModel is run from its own code (the ``taming-transformers-rom1504`` package). Its
``taming.main`` imports ``pytorch_lightning.utilities.distributed``, gone from Lightning 2, so that
one module is stubbed with Lightning's own ``rank_zero_only``. LPIPS would download VGG16: the loss
module's ``perceptual_loss`` is replaced by a module with LPIPS's parameter names (taming's
``LPIPS``: ``scaling_layer``, ``net.slice1..5`` of VGG16, ``lin0..4.model.1``), at small widths.

Layout of a Lightning 1.x checkpoint of these projects (taming pins pytorch-lightning 1.0.8):
``epoch``, ``global_step``, ``pytorch-lightning_version``, ``state_dict`` (OrderedDict),
``callbacks`` (keyed by the callback class: ``ModelCheckpoint`` -> its best score and path),
``optimizer_states`` (Adam of the autoencoder, Adam of the discriminator), ``lr_schedulers`` ([]).
Lightning >= 1.5 keys callbacks by a string and adds ``loops``, ``hparams_name`` and
``hyper_parameters`` (an ``AttributeDict`` of the constructor arguments) when the model saved them.

The official LG-VQ ``VQModel`` (taming/models/LG_vqgan.py, LG_cvq.py of the authors' repository)
adds to taming's keys: ``clip_model.*`` (OpenAI CLIP ViT-B/32, frozen), ``mskTransformer.*`` (its
masked-word transformer: ``encoder.layers.N...``, ``decoder.layers.N...``), ``mask_learned_parameter``
(1 x clip_text_truncate_len x 512), ``mlm_layer.{fc,ln}.*`` + ``mlm_layer.bias``, ``wrsr_fc.{fc,ln}.*``;
LG_cvq's quantizer (``CVQVectorQuantiser``) holds ``quantize.embedding.weight`` and the buffer
``quantize.embed_prob`` (its feature pool is a plain object, not saved).
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

TINY_DD = dict(
    double_z=False, z_channels=32, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
    num_res_blocks=1, attn_resolutions=[16], dropout=0.0,
)  # fmt: skip
LG_DD = dict(TINY_DD, drop_prob=0.1, clip_text_truncate_len=8, mask_transformer_layer=1, mask_transformer_head=1)
N_EMBED, EMBED_DIM = 16, 8
LOSS_PARAMS = dict(disc_conditional=False, disc_in_channels=3, disc_start=10, disc_weight=0.8, codebook_weight=1.0)


def load_taming():
    """taming's VQModel class and VQLPIPSWithDiscriminator module (imported from the installed package)."""
    import pytorch_lightning.utilities as pl_utilities

    if "pytorch_lightning.utilities.distributed" not in sys.modules:
        stub = types.ModuleType("pytorch_lightning.utilities.distributed")
        stub.rank_zero_only = pl_utilities.rank_zero_only
        sys.modules["pytorch_lightning.utilities.distributed"] = stub
    import taming.modules.losses.vqperceptual as vqperceptual
    from taming.models.vqgan import VQModel

    vqperceptual.LPIPS = SmallLPIPS
    return VQModel


class SmallLPIPS(nn.Module):
    """LPIPS's parameter names at small widths (never called: the tests compare reconstructions)."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.net = nn.Module()
        for i in range(1, 6):
            setattr(self.net, f"slice{i}", nn.Sequential(nn.Conv2d(3, 4, 3)))
        for i in range(5):
            setattr(self, f"lin{i}", nn.Module())
            getattr(self, f"lin{i}").model = nn.Sequential(nn.Dropout(), nn.Conv2d(4, 1, 1, bias=False))


def taming_model(seed: int = 0, dd: dict | None = None):
    """A taming VQModel at the tiny config, with random (seeded) weights, in eval mode."""
    VQModel = load_taming()
    torch.manual_seed(seed)
    lossconfig = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator", "params": LOSS_PARAMS}
    model = VQModel(dd or TINY_DD, lossconfig, n_embed=N_EMBED, embed_dim=EMBED_DIM).eval()
    with torch.no_grad():  # codes drawn from the model's own latents, so that many are in use
        x = torch.rand(2, 3, dd["resolution"] if dd else 32, dd["resolution"] if dd else 32) * 2 - 1
        z = model.quant_conv(model.encoder(x)).permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
        model.quantize.embedding.weight.copy_(z[torch.randperm(z.shape[0])[:N_EMBED]])
    return model


def yaml_config(target: str, dd: dict, extra_loss: dict | None = None) -> dict[str, Any]:
    """A config as taming's configs/*.yaml and the official configs_text/*.yaml lay it out."""
    return {
        "model": {
            "base_learning_rate": 4.5e-6,
            "target": target,
            "params": {
                "embed_dim": EMBED_DIM,
                "n_embed": N_EMBED,
                "ddconfig": dict(dd),
                "lossconfig": {
                    "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                    "params": {**LOSS_PARAMS, **(extra_loss or {})},
                },
            },
        },
        "data": {"target": "main.DataModuleFromConfig", "params": {"batch_size": 8}},
    }


def lightning_1x_checkpoint(state_dict: dict[str, torch.Tensor], global_step: int = 1234) -> dict[str, Any]:
    """What pytorch-lightning 1.0.8's ``ModelCheckpoint`` writes for taming's VQModel."""
    from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint

    params = [nn.Parameter(torch.zeros(2))]
    adam = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.9))
    params[0].grad = torch.ones(2)
    adam.step()
    return {
        "epoch": 7,
        "global_step": global_step,
        "pytorch-lightning_version": "1.0.8",
        "state_dict": OrderedDict(state_dict),
        "callbacks": {
            ModelCheckpoint: {
                "monitor": "val/rec_loss",
                "best_model_score": torch.tensor(0.1234),
                "best_model_path": "logs/x/checkpoints/epoch=000007.ckpt",
            }
        },
        "optimizer_states": [adam.state_dict(), adam.state_dict()],
        "lr_schedulers": [],
    }


def lightning_2x_checkpoint(state_dict: dict[str, torch.Tensor], hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """Lightning >= 1.5: string callback keys, ``loops``, and ``hyper_parameters`` as an AttributeDict."""
    from pytorch_lightning.utilities.parsing import AttributeDict

    checkpoint = lightning_1x_checkpoint(state_dict)
    checkpoint["pytorch-lightning_version"] = "1.9.5"
    checkpoint["callbacks"] = {
        "ModelCheckpoint{'monitor': 'val/rec_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
            "best_model_score": torch.tensor(0.1),
            "best_k_models": {"a.ckpt": torch.tensor(0.1)},
        }
    }
    checkpoint["loops"] = {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}}}}
    checkpoint["hparams_name"] = "kwargs"
    checkpoint["hyper_parameters"] = AttributeDict(hyper_parameters)
    return checkpoint


def official_extra_weights(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The official LG-VQ model's keys beyond taming's (CLIP, alignment heads), at small widths."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "clip_model.positional_embedding": rand(77, 16),
        "clip_model.text_projection": rand(16, 16),
        "clip_model.logit_scale": rand(()),
        "clip_model.visual.conv1.weight": rand(16, 3, 4, 4),
        "clip_model.transformer.resblocks.0.attn.in_proj_weight": rand(48, 16),
        "clip_model.token_embedding.weight": rand(100, 16),
        "clip_model.ln_final.weight": rand(16),
        "mskTransformer.encoder.layers.0.attention.w_q.weight": rand(16, 8),
        "mskTransformer.decoder.layers.0.ffn.linear1.weight": rand(16, 16),
        "mask_learned_parameter": rand(1, 8, 16),
        "mlm_layer.fc.weight": rand(16, 16),
        "mlm_layer.ln.weight": rand(16),
        "mlm_layer.bias": rand(1, 1, 100),
        "wrsr_fc.fc.weight": rand(16, EMBED_DIM),
        "wrsr_fc.ln.bias": rand(16),
    }
