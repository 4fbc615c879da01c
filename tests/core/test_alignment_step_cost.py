"""The reorderings and options that make an LG step cheap at small scale (README: What LG costs).

Each reordering is checked against the computation it replaces; each option against what it is
documented to change.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from test_alignment_module import CAPTIONS, NAMES, make_alignment, make_quantizer, quantize, tiny_encoder
from torch import nn

from lgvq_core.alignment.base import AlignmentInputs
from lgvq_core.alignment.code_vit import self_attention
from lgvq_core.alignment.loss_configs import MaskedTextConfig, RelationConfig
from lgvq_core.alignment.masked_text import MaskedTextLoss
from lgvq_core.alignment.relation import RelationLoss
from lgvq_core.runner.step import GeneratorModule
from lgvq_core.text_encoder import TextFeatures
from lgvq_core.text_feature_cache import TextFeatureCache

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LEVERS = {
    "masked-text": {"text_input": "token-embedding", "factored_cross_attention": True, "decoder_width": 8},
    "relation": {"projection_width": 4},
}


# ------------------------------------------------------------------------------------------
# the alignment module forms the W-wide code tokens only for a loss that reads them
# ------------------------------------------------------------------------------------------
def _terms_and_grads(alignment, encoder, quant):
    text = encoder.encode(CAPTIONS)
    torch.manual_seed(3)  # the same masks in both computations
    terms = alignment(quant, text, torch.zeros(16, 8), torch.zeros(4, 2, 2, dtype=torch.long), encoder)
    leaves = [quant, *alignment.parameters()]
    grads = torch.autograd.grad(alignment.weighted_sum(terms), leaves)
    return terms, grads


def test_without_a_reader_of_the_tokens_the_terms_and_gradients_are_those_of_the_full_tokens():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    alignment = make_alignment(encoder, options=LEVERS, vit_width=6)
    assert not any(loss.reads_vit_tokens for loss in alignment.losses.values())
    quant = torch.randn(4, 8, 2, 2, requires_grad=True)
    lean, lean_grads = _terms_and_grads(alignment, encoder, quant)
    for loss in alignment.losses.values():  # now every loss asks for the tokens: the module forms them
        loss.reads_vit_tokens = True
    full, full_grads = _terms_and_grads(alignment, encoder, quant)
    assert set(lean) == set(NAMES)
    for name in NAMES:
        torch.testing.assert_close(lean[name], full[name], rtol=1e-6, atol=1e-7)
    for got, expected in zip(lean_grads, full_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_the_official_masked_text_input_still_reads_the_tokens():
    loss = MaskedTextLoss(MaskedTextConfig(), width=16, vocab_size=64, context_length=10)
    assert loss.reads_vit_tokens
    factored = MaskedTextLoss(
        MaskedTextConfig(factored_cross_attention=True), width=16, vocab_size=64, context_length=10
    )
    assert not factored.reads_vit_tokens


# ------------------------------------------------------------------------------------------
# relation: the match at the code ViT's width, trailing padding columns, a narrower g
# ------------------------------------------------------------------------------------------
def _relation_case(length: int, seed: int = 0):
    torch.manual_seed(seed)
    batch, width, dim, side, inner = 3, 24, 6, 4, 5
    pad = torch.arange(length) < torch.tensor([[7], [5], [3]])
    text = TextFeatures(
        torch.randint(3, 50, (batch, length)) * pad,
        pad,
        pad & (torch.arange(length) > 0),
        torch.randn(batch, length, width),
        torch.zeros(batch, width),
    )
    features = torch.randn(batch, side * side + 1, inner)
    proj = torch.randn(inner, width)
    quant = torch.randn(batch, dim, side, side, requires_grad=True)
    return text, features, proj, quant, dim, width


@pytest.mark.parametrize("scale_by_match", [True, False])
def test_the_match_on_the_factors_is_the_match_on_the_tokens(scale_by_match):
    text, features, proj, quant, dim, width = _relation_case(7)
    loss = RelationLoss(RelationConfig(scale_by_match=scale_by_match), code_dim=dim, width=width)
    tokens = features @ proj
    on_tokens = AlignmentInputs(quant, text, tokens, torch.zeros(4, dim), torch.zeros(3, 4, 4, dtype=torch.long), None)
    on_factors = AlignmentInputs(
        quant, text, None, torch.zeros(4, dim), torch.zeros(3, 4, 4, dtype=torch.long), None, None, features, proj
    )
    value, expected = loss(on_factors), loss(on_tokens)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(value, quant)
    (expected_grad,) = torch.autograd.grad(expected, quant)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("reduction", ["mean-all", "mean-valid"])
def test_trailing_padding_columns_leave_the_official_mean_over_b_l_l(reduction):
    # Columns that are padding in every caption enter the official mean as zeros: the loss on a
    # batch padded to L = 12 is the loss on the same batch at L = 7 times 7^2 / 12^2 (mean-all).
    short = _relation_case(7)
    long = _relation_case(12)
    text = short[0]
    extra = 5
    padded = TextFeatures(
        torch.nn.functional.pad(text.ids, (0, extra)),
        torch.nn.functional.pad(text.pad_mask, (0, extra)),
        torch.nn.functional.pad(text.word_mask, (0, extra)),
        torch.cat([text.token_states, long[0].token_states[:, 7:]], dim=1),  # padding states of any value
        text.sentence,
    )
    _, features, proj, quant, dim, width = short
    loss = RelationLoss(RelationConfig(reduction=reduction), code_dim=dim, width=width)
    codebook, indices = torch.zeros(4, dim), torch.zeros(3, 4, 4, dtype=torch.long)
    at_7 = loss(AlignmentInputs(quant, text, features @ proj, codebook, indices, None)).item()
    at_12 = loss(AlignmentInputs(quant, padded, features @ proj, codebook, indices, None)).item()
    scale = 7**2 / 12**2 if reduction == "mean-all" else 1.0
    assert at_12 == pytest.approx(at_7 * scale, rel=1e-6)


def test_projection_width_sets_the_width_of_g_and_needs_g():
    loss = RelationLoss(RelationConfig(projection_width=5), code_dim=6, width=24)
    assert loss.projection[0].weight.shape == (5, 6) and loss.projection[2].weight.shape == (5,)
    text, features, proj, quant, dim, width = _relation_case(7)
    inputs = AlignmentInputs(
        quant, text, features @ proj, torch.zeros(4, dim), torch.zeros(3, 4, 4, dtype=torch.long), None
    )
    value = loss(inputs)
    assert torch.isfinite(value) and value > 0
    (grad,) = torch.autograd.grad(value, quant)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="projection_width.*code_projection"):
        RelationLoss(RelationConfig(code_projection="none", projection_width=5), code_dim=24, width=24)


# ------------------------------------------------------------------------------------------
# the code ViT's attention as plain matmuls; masked-text's per-token in-projection
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [1, 4])
def test_plain_matmul_attention_is_the_multihead_module(heads):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, heads, batch_first=True)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    x = torch.randn(3, 7, 16, requires_grad=True)
    got = self_attention(attn, x)
    expected = attn(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(got.square().sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_token_rows_are_projected_once_per_distinct_token():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    config = MaskedTextConfig(text_input="token-embedding", decoder_width=8)
    loss = MaskedTextLoss(config, width=16, vocab_size=encoder.vocab_size, context_length=10)
    text = encoder.encode(CAPTIONS)
    masked = torch.zeros_like(text.pad_mask, dtype=torch.bool)
    masked[:, 2] = True
    inputs = AlignmentInputs(torch.zeros(4, 8, 2, 2), text, None, torch.zeros(4, 8), None, encoder)
    got = loss.decoder_inputs(inputs, masked)
    rows = loss.input_proj(encoder.embed_ids(text.ids))  # every position projected on its own
    expected = torch.where(masked.unsqueeze(-1), loss.mask_embedding, rows) * text.pad_mask.unsqueeze(-1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    columns = 5
    torch.testing.assert_close(
        loss.decoder_inputs(inputs, masked, columns), expected[:, :columns], rtol=1e-6, atol=1e-7
    )


# ------------------------------------------------------------------------------------------
# run.alignment_precision = "fp32" under bf16 autocast
# ------------------------------------------------------------------------------------------
class _Tokenizer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 8, 2, stride=2)
        self.quantizer = make_quantizer(16, 8)

    def forward(self, images):
        quant, indices, _ = quantize(self.quantizer, self.encoder(images))
        return SimpleNamespace(quant=quant, indices=indices, recon=images)

    def generator_loss(self, images, output, step, discriminator):
        return {"total": output.quant.float().square().mean()}


def test_fp32_alignment_under_bf16_autocast_is_the_fp32_computation():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    alignment = make_alignment(encoder, options=LEVERS, vit_width=6)
    tokenizer = _Tokenizer()
    text = encoder.encode(CAPTIONS)
    images = torch.randn(4, 3, 4, 4)
    module = GeneratorModule(tokenizer, alignment, encoder, alignment_fp32=True)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = module(images, text, 0, None)
        quant = tokenizer(images).quant
    torch.manual_seed(5)
    expected = alignment(quant.float(), text, tokenizer.quantizer.codebook, tokenizer(images).indices, encoder)
    for name in NAMES:
        value = terms[name.replace("-", "_") + "_loss"]
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the default: the losses under the run's autocast
        autocast_terms, _ = GeneratorModule(tokenizer, alignment, encoder)(images, text, 0, None)
    assert any(
        not torch.equal(autocast_terms[name.replace("-", "_") + "_loss"], terms[name.replace("-", "_") + "_loss"])
        for name in NAMES
    )


# ------------------------------------------------------------------------------------------
# the text cache serves a warmed split from one block
# ------------------------------------------------------------------------------------------
def test_the_text_cache_merges_its_chunks_and_serves_the_same_features():
    encoder = tiny_encoder()
    captions = [f"a {colour} shape number {i}" for i, colour in enumerate(["red", "blue", "green"] * 7)]
    cache = TextFeatureCache(encoder, batch_size=4)
    cache.warm(captions)
    assert len(cache._chunks) == 6
    request = [captions[i] for i in (20, 0, 5, 5, 13, 2)]
    served = cache.get(request)
    assert len(cache._chunks) == 1
    expected = encoder.encode(request)
    for name in ("ids", "pad_mask", "word_mask", "token_states", "sentence"):
        got, want = getattr(served, name), getattr(expected, name)
        torch.testing.assert_close(got.to(want.dtype), want, rtol=1e-5, atol=1e-6)
    cache.warm(["a caption added later"])  # a new chunk after the merge is served beside the merged one
    assert torch.equal(
        cache.get(["a caption added later", captions[3]]).ids,
        encoder.encode(["a caption added later", captions[3]]).ids.to(torch.long),
    )
