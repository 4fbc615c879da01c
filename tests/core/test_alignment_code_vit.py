"""The shared code ViT (docs/method.md: Code ViT): layout, initialisation and forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgvq_core.alignment.code_vit import CodeViT


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference(vit: CodeViT, quant: np.ndarray) -> np.ndarray:
    """A plain numpy CLIP ViT over the codes (one head), from the module's weights."""
    p = {k: v.detach().double().numpy() for k, v in vit.state_dict().items()}
    d = vit.width
    out = []
    for image in quant:
        tokens = image.reshape(vit.code_dim, -1).T  # (h w) D
        if "input_proj.weight" in p:  # [code_vit] width: codes mapped to the blocks' width first
            tokens = tokens @ p["input_proj.weight"].T
        x = np.concatenate([p["class_embedding"][None], tokens]) + p["positional_embedding"]
        x = _layer_norm(x, p["ln_pre.weight"], p["ln_pre.bias"])
        for i in range(vit.layers):
            b = f"resblocks.{i}."
            h = _layer_norm(x, p[b + "ln_1.weight"], p[b + "ln_1.bias"])
            qkv = h @ p[b + "attn.in_proj_weight"].T + p[b + "attn.in_proj_bias"]
            q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
            attended = _softmax(q @ k.T / np.sqrt(d)) @ v
            x = x + attended @ p[b + "attn.out_proj.weight"].T + p[b + "attn.out_proj.bias"]
            h = _layer_norm(x, p[b + "ln_2.weight"], p[b + "ln_2.bias"])
            h = h @ p[b + "mlp.c_fc.weight"].T + p[b + "mlp.c_fc.bias"]
            h = h / (1 + np.exp(-1.702 * h))  # QuickGELU
            x = x + h @ p[b + "mlp.c_proj.weight"].T + p[b + "mlp.c_proj.bias"]
        out.append(_layer_norm(x, p["ln_post.weight"], p["ln_post.bias"]) @ p["proj"])
    return np.stack(out)


def test_forward_matches_a_numpy_clip_vit_over_the_codes():
    torch.manual_seed(0)
    vit = CodeViT(code_dim=8, latent_size=(2, 3), text_width=5, layers=2, heads=1)
    with torch.no_grad():  # make every term visible (the default init is tiny)
        for parameter in vit.parameters():
            parameter.normal_(0, 0.5)
    quant = torch.randn(2, 8, 2, 3)
    tokens = vit(quant)
    assert tokens.shape == (2, 7, 5)  # global token + 2*3 codes, width W
    np.testing.assert_allclose(tokens.detach().numpy(), _reference(vit, quant.double().numpy()), rtol=1e-4, atol=1e-5)


def test_positions_follow_the_latent_grid_and_other_grids_are_refused():
    vit = CodeViT(code_dim=8, latent_size=(4, 2), text_width=6)
    assert vit.positional_embedding.shape == (4 * 2 + 1, 8)
    with pytest.raises(ValueError, match="4x2 grid, got 8 channels on 2x4"):
        vit(torch.zeros(1, 8, 2, 4))


def test_initialisation_follows_the_clip_vit_table():
    torch.manual_seed(0)
    d, layers = 64, 2
    vit = CodeViT(code_dim=d, latent_size=(16, 16), text_width=48, layers=layers, heads=1)
    block = vit.resblocks[0]

    def close(t: torch.Tensor, std: float) -> None:
        assert t.std().item() == pytest.approx(std, rel=0.1)
        assert abs(t.mean().item()) < 0.1 * std + 1e-3

    close(vit.positional_embedding, 0.01)
    close(vit.proj, 0.01)
    close(block.attn.in_proj_weight, d**-0.5)
    close(block.attn.out_proj.weight, d**-0.5 * (2 * layers) ** -0.5)
    close(block.mlp.c_fc.weight, (2 * d) ** -0.5)
    close(block.mlp.c_proj.weight, d**-0.5 * (2 * layers) ** -0.5)
    assert vit.class_embedding.shape == (d,) and vit.class_embedding.abs().max() < 0.06
    assert block.mlp.c_fc.weight.shape == (4 * d, d)


def test_global_token_gets_its_own_projection_only_when_sentence_and_token_widths_differ():
    same = CodeViT(code_dim=8, latent_size=(2, 2), text_width=6, sentence_dim=6)
    assert same.global_proj is None
    tokens = same(torch.randn(3, 8, 2, 2))
    assert torch.equal(same.global_embedding(tokens), tokens[:, 0])
    other = CodeViT(code_dim=8, latent_size=(2, 2), text_width=6, sentence_dim=10)
    assert other.global_embedding(other(torch.randn(3, 8, 2, 2))).shape == (3, 10)


def test_heads_must_divide_the_code_dim():
    with pytest.raises(ValueError, match="heads = 3 must divide the code dim D = 8"):
        CodeViT(code_dim=8, latent_size=(2, 2), text_width=6, heads=3)


# ------------------------------------------------------------------------------------------
# [code_vit] width (a small-scale speed lever; unset is the official ViT)
# ------------------------------------------------------------------------------------------
OFFICIAL_KEYS = {
    "class_embedding",
    "positional_embedding",
    "ln_pre.weight",
    "ln_pre.bias",
    "ln_post.weight",
    "ln_post.bias",
    "proj",
    *(f"resblocks.0.{name}" for name in (
        "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
        "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias",
    )),
}  # fmt: skip


def test_unset_width_builds_the_official_vit_draw_for_draw():
    torch.manual_seed(0)
    official = CodeViT(code_dim=8, latent_size=(2, 3), text_width=5, layers=1, heads=2)
    torch.manual_seed(0)
    unset = CodeViT(code_dim=8, latent_size=(2, 3), text_width=5, layers=1, heads=2, width=None)
    assert set(unset.state_dict()) == OFFICIAL_KEYS and unset.input_proj is None and unset.width == 8
    for name, value in official.state_dict().items():
        assert torch.equal(value, unset.state_dict()[name]), name
    quant = torch.randn(2, 8, 2, 3)
    assert torch.equal(official(quant), unset(quant))


def test_a_set_width_maps_the_codes_in_and_runs_the_blocks_at_that_width():
    torch.manual_seed(0)
    vit = CodeViT(code_dim=8, latent_size=(2, 3), text_width=5, layers=2, heads=1, width=6)
    assert vit.input_proj.weight.shape == (6, 8) and vit.input_proj.bias is None
    assert vit.positional_embedding.shape == (7, 6) and vit.class_embedding.shape == (6,)
    assert vit.proj.shape == (6, 5) and vit.resblocks[0].mlp.c_fc.weight.shape == (24, 6)
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.normal_(0, 0.5)
    quant = torch.randn(2, 8, 2, 3, requires_grad=True)
    tokens = vit(quant)
    assert tokens.shape == (2, 7, 5)
    expected = _reference(vit, quant.detach().double().numpy())
    np.testing.assert_allclose(tokens.detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    tokens.square().sum().backward()
    assert quant.grad.abs().sum() > 0 and vit.input_proj.weight.grad.abs().sum() > 0


def test_a_set_width_is_initialised_at_that_width():
    torch.manual_seed(0)
    code_dim, width, layers = 16, 64, 1
    vit = CodeViT(code_dim=code_dim, latent_size=(16, 16), text_width=48, layers=layers, width=width)
    block = vit.resblocks[0]
    assert vit.input_proj.weight.std().item() == pytest.approx(code_dim**-0.5, rel=0.1)
    assert block.attn.in_proj_weight.std().item() == pytest.approx(width**-0.5, rel=0.1)
    assert block.mlp.c_fc.weight.std().item() == pytest.approx((2 * width) ** -0.5, rel=0.1)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(width**-0.5 * (2 * layers) ** -0.5, rel=0.1)


def test_heads_must_divide_a_set_width_not_the_code_dim():
    vit = CodeViT(code_dim=8, latent_size=(2, 2), text_width=5, heads=3, width=6)  # 3 does not divide D = 8: fine
    assert vit(torch.randn(2, 8, 2, 2)).shape == (2, 5, 5)
    with pytest.raises(ValueError, match=r"heads = 4 must divide \[code_vit\] width = 6"):
        CodeViT(code_dim=8, latent_size=(2, 2), text_width=6, heads=4, width=6)
