"""masked-text (docs/method.md: Masked text prediction).

Mask sampling, decoder inputs (and the official leak), decoder, head, loss.
"""

from __future__ import annotations

import io
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import erf

from lgvq_core.alignment.base import AlignmentInputs
from lgvq_core.alignment.code_vit import CodeViT
from lgvq_core.alignment.loss_configs import MaskedTextConfig, MaskRatioConfig
from lgvq_core.alignment.masked_text import MaskedTextLoss, build_masked_text, encode_masked, label_smoothed_nll
from lgvq_core.alignment.masking import sample_mask_ratio, select_masked
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError
from lgvq_core.run_file import structure_component
from lgvq_core.testing.config import TinyTextConfig
from lgvq_core.testing.doubles import TinyText
from lgvq_core.text_encoder import TextFeatures

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_encoder(causal: bool = False, width: int = 16, vocab_size: int = 1024, length: int = 10) -> TinyText:
    encoder = TinyText(TinyTextConfig(width=width, vocab_size=vocab_size, causal=causal, context_length=length))
    with torch.no_grad():
        if encoder.norm.weight.abs().sum() == 0:  # a zero LayerNorm gain would make every state 0
            encoder.norm.weight.fill_(1.0)
    return encoder


def inputs_for(text: TextFeatures, encoder, vit_tokens: torch.Tensor) -> AlignmentInputs:
    batch = len(text)
    return AlignmentInputs(
        quant=torch.zeros(batch, 1, 1, 1),
        text=text,
        vit_tokens=vit_tokens,
        codebook=torch.zeros(1, 1),
        indices=torch.zeros(batch, 1, 1, dtype=torch.long),
        text_encoder=encoder,
    )


# ------------------------------------------------------------------------------------------
# mask ratio and mask selection
# ------------------------------------------------------------------------------------------
def test_mask_ratio_is_the_official_truncated_normal_piled_near_its_upper_bound():
    torch.manual_seed(0)
    ratios = sample_mask_ratio(MaskRatioConfig(), 10_000)
    assert ratios.min() >= 0.1 and ratios.max() <= 0.3
    assert ratios.mean().item() == pytest.approx(0.263, abs=0.002)
    low, high = ratios.quantile(torch.tensor([0.1, 0.9])).tolist()
    assert low == pytest.approx(0.217, abs=0.004)
    assert high == pytest.approx(0.296, abs=0.003)


def test_mask_ratio_follows_its_table():
    torch.manual_seed(0)
    ratios = sample_mask_ratio(MaskRatioConfig(mean=0.55, std=0.25, min=0.5, max=1.0), 5000)
    assert ratios.min() >= 0.5 and ratios.max() <= 1.0
    assert 0.68 < ratios.mean().item() < 0.76  # MAGE's distribution: mean about 0.72


WORDS = torch.tensor(
    [
        [False, True, True, True, False, False],  # BOS w w w EOS PAD
        [False, True, False, False, False, False],  # BOS w EOS PAD PAD PAD
        [False, False, False, False, False, False],  # BOS EOS PAD ...
    ]
)


def test_only_word_tokens_are_ever_masked():
    torch.manual_seed(0)
    assert torch.equal(select_masked(WORDS, torch.tensor(1.0)), WORDS)
    assert not select_masked(WORDS, torch.tensor(0.0)).any()
    for _ in range(20):
        assert not (select_masked(WORDS, torch.tensor(0.5)) & ~WORDS).any()


def test_each_token_is_masked_with_the_ratio():
    torch.manual_seed(0)
    words = torch.ones(400, 30, dtype=torch.bool)
    assert select_masked(words, torch.tensor(0.25)).float().mean().item() == pytest.approx(0.25, abs=0.01)


def test_per_caption_ratios():
    masked = select_masked(WORDS[:2], torch.tensor([0.0, 1.0]))
    assert not masked[0].any() and torch.equal(masked[1], WORDS[1])


def test_word_unit_masks_all_pieces_of_a_word_together():
    torch.manual_seed(0)
    words = torch.tensor([[False, True, True, True, True, False]])
    unit_ids = torch.tensor([[-1, 1, 1, 3, 3, -1]])  # two words of two pieces each
    seen = set()
    for _ in range(50):
        masked = select_masked(words, torch.tensor(0.5), unit_ids)
        assert masked[0, 1] == masked[0, 2] and masked[0, 3] == masked[0, 4]
        seen.add(tuple(masked[0].tolist()))
    assert len(seen) == 4


def test_min_masked_tops_up_captions_that_drew_too_few():
    torch.manual_seed(0)
    masked = select_masked(WORDS, torch.tensor(0.0), min_masked=2)
    assert masked.sum(1).tolist() == [2, 1, 0]  # as many as each caption has, up to 2
    assert not (masked & ~WORDS).any()


# ------------------------------------------------------------------------------------------
# decoder inputs and the official leak
# ------------------------------------------------------------------------------------------
CAPTIONS = ["a red bird sits on a branch", "a blue bird sits on a branch"]
MASK = torch.zeros(2, 10, dtype=torch.bool)
MASK[:, 2] = True  # "red" / "blue" (position 0 is the start token)


def _decoder_inputs(text_input: str, causal: bool) -> torch.Tensor:
    torch.manual_seed(0)
    encoder = tiny_encoder(causal=causal)
    loss = MaskedTextLoss(MaskedTextConfig(text_input=text_input), 16, 1024, 10)
    text = encoder.encode(CAPTIONS)
    assert text.ids[0, 2] != text.ids[1, 2] and torch.equal(text.ids[0, 3:], text.ids[1, 3:])
    return loss.decoder_inputs(inputs_for(text, encoder, torch.zeros(2, 5, 16)), MASK)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("text_input", ["masked-contextual", "token-embedding"])
def test_leak_free_inputs_do_not_depend_on_the_masked_word(text_input, causal):
    h0 = _decoder_inputs(text_input, causal)
    torch.testing.assert_close(h0[0], h0[1])


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_official_unmasked_contextual_inputs_reveal_the_masked_word(causal):
    h0 = _decoder_inputs("unmasked-contextual", causal)
    torch.testing.assert_close(h0[0, 2], h0[1, 2])  # the masked row itself is the mask embedding ...
    differs = (h0[0] - h0[1]).abs().amax(-1) > 1e-6
    assert differs[8]  # ... but the end token has seen the word
    assert differs[:2].any() != causal  # tokens before it see it only in a bidirectional encoder


def test_masked_rows_are_the_mask_embeddings_and_padding_is_zero():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    loss = MaskedTextLoss(MaskedTextConfig(), 16, 1024, 10)
    text = encoder.encode(["a red bird"])  # BOS a red bird EOS PAD*5
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 1] = True
    h0 = loss.decoder_inputs(inputs_for(text, encoder, torch.zeros(1, 5, 16)), mask)
    torch.testing.assert_close(h0[0, 1], loss.mask_embedding[1])
    torch.testing.assert_close(h0[0, 2], text.token_states[0, 2])
    assert torch.equal(h0[0, 5:], torch.zeros(5, 16))
    assert loss.mask_embedding.shape == (10, 16) and loss.mask_embedding.std().item() == pytest.approx(0.01, rel=0.3)


def test_leak_warning_names_the_official_input_only():
    config = MaskedTextConfig()
    assert "bidirectional" in config.leak_warning(SimpleNamespace(causal=False))
    assert "end token" in config.leak_warning(SimpleNamespace(causal=True))
    assert MaskedTextConfig(text_input="masked-contextual").leak_warning(SimpleNamespace(causal=False)) is None
    run = SimpleNamespace(text_encoder=SimpleNamespace(config=TinyTextConfig(causal=False)))
    (problem,) = config.cross_check(run, "$.alignment[1]")
    assert problem.warning and problem.path == "$.alignment[1].text_input"


# ------------------------------------------------------------------------------------------
# decoder, head and loss against a numpy reference
# ------------------------------------------------------------------------------------------
def _ln(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * weight + bias


def _attention(p, prefix, query, source, mask=None):
    q = query @ p[prefix + "w_q.weight"].T + p[prefix + "w_q.bias"]
    k = source @ p[prefix + "w_k.weight"].T + p[prefix + "w_k.bias"]
    v = source @ p[prefix + "w_v.weight"].T + p[prefix + "w_v.bias"]
    scores = q @ k.T / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -10000.0)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v) @ p[prefix + "w_out.weight"].T + p[prefix + "w_out.bias"]


def _reference_loss(loss, h0, codes, pad, targets, ids, embedding, smoothing, attend_padding):
    """Fused post-norm decoder, vocabulary head and label-smoothed CE in numpy (dropout off).

    ``attend_padding``: every row attends to all L rows (the official decoder); else padding keys are masked.
    """
    p = {k: v.detach().double().numpy() for k, v in loss.state_dict().items()}
    total, count = 0.0, 0
    for b in range(h0.shape[0]):
        x = h0[b]
        key_mask = None if attend_padding else pad[b][:, None] & pad[b][None, :]
        for i in range(len(loss.decoder.layers)):
            lp = f"decoder.layers.{i}."
            x = _ln(
                x + _attention(p, lp + "self_attention.", x, x, key_mask),
                p[lp + "norm1.weight"],
                p[lp + "norm1.bias"],
                1e-12,
            )
            x = _ln(
                x + _attention(p, lp + "cross_attention.", x, codes[b]),
                p[lp + "norm2.weight"],
                p[lp + "norm2.bias"],
                1e-12,
            )
            hidden = np.maximum(x @ p[lp + "ffn.linear1.weight"].T + p[lp + "ffn.linear1.bias"], 0)
            x = _ln(
                x + hidden @ p[lp + "ffn.linear2.weight"].T + p[lp + "ffn.linear2.bias"],
                p[lp + "norm3.weight"],
                p[lp + "norm3.bias"],
                1e-12,
            )
        for k in np.flatnonzero(targets[b]):
            a = x[k] @ p["head.fc.weight"].T + p["head.fc.bias"]
            a = 0.5 * a * (1 + erf(a / np.sqrt(2)))
            a = _ln(a, p["head.norm.weight"], p["head.norm.bias"], 1e-5)
            logits = a @ embedding.T + p["head.bias"]
            log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            total += (1 - smoothing) * -log_probs[ids[b, k]] + smoothing * -log_probs.mean()
            count += 1
    return total / (count + 5e-6)


@pytest.mark.parametrize("attend_padding", [True, False], ids=["official-all-rows", "pad-keys-masked"])
@pytest.mark.parametrize("smoothing", [0.1, 0.0])
def test_loss_matches_a_numpy_decoder_head_and_label_smoothed_ce(smoothing, attend_padding):
    torch.manual_seed(0)
    width, vocab, length, batch = 8, 12, 6, 2
    config = MaskedTextConfig(decoder_layers=2, dropout=0.0, label_smoothing=smoothing, attend_padding=attend_padding)
    loss = MaskedTextLoss(config, width, vocab, length)
    with torch.no_grad():
        for parameter in loss.parameters():  # every weight and bias visible, incl. head bias b
            parameter.normal_(0, 0.4)
    ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0]])
    pad = ids != 0
    words = pad & (ids > 2)
    text = TextFeatures(ids, pad, words, torch.randn(batch, length, width), torch.randn(batch, width))
    embedding = torch.randn(vocab, width)
    encoder = SimpleNamespace(token_embedding=embedding)
    codes = torch.randn(batch, 5, width)
    masked = torch.tensor([[False, True, False, True, False, True], [False, False, True, False, False, False]])
    # position 5 of caption 0 is padding (never a target) although the mask says so; column 5 is padding in
    # both captions: with masked padding keys the module drops it before the decoder while the reference keeps it
    value = loss.masked_loss(inputs_for(text, encoder, codes), masked)

    targets = (masked & words).numpy()
    h0 = np.where(
        targets[..., None], loss.mask_embedding.detach().double().numpy()[None], text.token_states.double().numpy()
    )
    h0 = h0 * pad.numpy()[..., None]
    expected = _reference_loss(
        loss,
        h0,
        codes.double().numpy(),
        pad.numpy(),
        targets,
        ids.numpy(),
        embedding.double().numpy(),
        smoothing,
        attend_padding,
    )
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_official_decoder_attends_to_padding_rows_as_a_hand_built_all_rows_computation():
    """One layer, width 3, one real token and one padding row, every weight chosen by hand.

    Self-attention: q = k = x, v = x + b (identity weights, value bias b), out = identity. The padding
    row enters as zeros, so its key is 0 and its value is b: the real row's attention output is
    w (x + b) + (1 - w) b with w = softmax([x.x / sqrt(3), 0])[0]. Masking the padding key gives x + b.
    Cross-attention and the FFN are set to add nothing, so LN2 and LN3 keep LN1's output.
    """
    width = 3
    config = MaskedTextConfig(decoder_layers=1, dropout=0.0)
    assert config.attend_padding  # the official default
    loss = MaskedTextLoss(config, width, vocab_size=3, context_length=2)
    layer = loss.decoder.layers[0]
    value_bias = torch.tensor([0.0, 1.0, 0.0])
    with torch.no_grad():
        for attention in (layer.self_attention, layer.cross_attention):
            for linear in (attention.w_q, attention.w_k, attention.w_v, attention.w_out):
                linear.weight.copy_(torch.eye(width))
                linear.bias.zero_()
        layer.self_attention.w_v.bias.copy_(value_bias)
        layer.cross_attention.w_v.weight.zero_()
        layer.ffn.linear2.weight.zero_()
        layer.ffn.linear2.bias.zero_()
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # b=1, l=2: a real row, then a padding row (zeroed)
    pad = torch.tensor([[True, False]])
    codes = torch.zeros(1, 4, width)

    def ln(v: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(v, (width,), eps=1e-12)

    official = loss.decode(x, codes, pad)
    w = math.exp(3**-0.5) / (math.exp(3**-0.5) + 1.0)
    real = x[0, 0]
    torch.testing.assert_close(official[0, 0], ln(real + w * (real + value_bias) + (1 - w) * value_bias))
    # the padding row's query is 0: equal weights on both rows, output (x + b) / 2 + b / 2
    torch.testing.assert_close(official[0, 1], ln(0.5 * real + value_bias))

    loss.config.attend_padding = False
    masked = loss.decode(x, codes, pad)  # the padding column is dropped: the real row sees itself only
    assert masked.shape == (1, 1, width)
    torch.testing.assert_close(masked[0, 0], ln(real + real + value_bias))
    assert (masked[0, 0] - official[0, 0]).abs().max() > 0.05  # the padding row changed the real token's output


def _padded(text: TextFeatures, extra: int) -> TextFeatures:
    """The same captions with ``extra`` more padding columns."""

    def grow(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)

    return TextFeatures(
        grow(text.ids), grow(text.pad_mask), grow(text.word_mask), grow(text.token_states), text.sentence
    )


@pytest.mark.parametrize("attend_padding", [True, False])
def test_only_the_official_loss_depends_on_the_number_of_padding_rows(attend_padding):
    torch.manual_seed(0)
    encoder = tiny_encoder()
    text = encoder.encode(CAPTIONS)  # 8 and 8 real tokens of 10
    codes = torch.randn(2, 5, 16)
    loss = MaskedTextLoss(MaskedTextConfig(dropout=0.0, attend_padding=attend_padding), 16, 1024, 14)
    longer = loss.masked_loss(inputs_for(_padded(text, 4), encoder, codes), F.pad(MASK, (0, 4)))
    shorter = MaskedTextLoss(loss.config, 16, 1024, 10)
    shorter.load_state_dict({**loss.state_dict(), "mask_embedding": loss.mask_embedding[:10]})
    value = shorter.masked_loss(inputs_for(text, encoder, codes), MASK)
    if attend_padding:
        assert abs(value.item() - longer.item()) > 1e-4 * value.item()
    else:
        assert value.item() == pytest.approx(longer.item(), rel=1e-6)


def test_label_smoothing_is_the_official_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = F.log_softmax(logits, -1)
    expected = 0.9 * -log_p[0, 0] + 0.1 * -log_p[0].mean()
    assert label_smoothed_nll(logits, torch.tensor([0]), 0.1).item() == pytest.approx(expected.item())
    assert label_smoothed_nll(logits, torch.tensor([0]), 0.1).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.1).item()
    )


def test_the_code_tokens_are_read_through_cross_attention():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    loss = MaskedTextLoss(MaskedTextConfig(dropout=0.0), 16, 1024, 10)
    text = encoder.encode(CAPTIONS)
    codes = torch.randn(2, 5, 16, requires_grad=True)
    value = loss.masked_loss(inputs_for(text, encoder, codes), MASK)
    value.backward()
    assert codes.grad.abs().sum() > 0
    assert loss.masked_loss(inputs_for(text, encoder, codes.detach() + 1.0), MASK).item() != pytest.approx(value.item())


def test_head_is_tied_to_the_frozen_token_embedding_and_only_its_bias_is_learned():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    loss = build_masked_text(MaskedTextConfig(), BuildContext(text_encoder=encoder))
    assert loss.head.bias.shape == (1024,) and torch.equal(loss.head.bias, torch.zeros(1024))
    assert all(p is not encoder.token_embedding for p in loss.parameters())
    text = encoder.encode(CAPTIONS)
    loss.masked_loss(inputs_for(text, encoder, torch.randn(2, 5, 16)), MASK).backward()
    assert encoder.token_embedding.grad is None
    assert loss.head.bias.grad.abs().sum() > 0 and loss.mask_embedding.grad[2].abs().sum() > 0


def test_two_stage_decoder_is_a_self_attention_stack_then_a_cross_attention_stack():
    loss = MaskedTextLoss(MaskedTextConfig(decoder="two-stage", decoder_layers=2), 16, 1024, 10)
    kinds = [(layer.self_attention is not None, layer.cross_attention is not None) for layer in loss.decoder.layers]
    assert kinds == [(True, False), (True, False), (False, True), (False, True)]
    fused = MaskedTextLoss(MaskedTextConfig(), 16, 1024, 10)
    assert [(True, True)] * 2 == [
        (layer.self_attention is not None, layer.cross_attention is not None) for layer in fused.decoder.layers
    ]
    encoder = tiny_encoder()
    value = loss.masked_loss(inputs_for(encoder.encode(CAPTIONS), encoder, torch.randn(2, 5, 16)), MASK)
    assert torch.isfinite(value) and value > 0


def test_no_masked_token_gives_exactly_zero_loss_and_zero_gradients():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    loss = MaskedTextLoss(MaskedTextConfig(), 16, 1024, 10)
    codes = torch.randn(2, 5, 16, requires_grad=True)
    value = loss.masked_loss(inputs_for(encoder.encode(CAPTIONS), encoder, codes), torch.zeros(2, 10, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    for name, parameter in loss.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() == 0, name
    assert codes.grad is not None and codes.grad.abs().sum() == 0


def test_word_unit_and_per_sample_ratio_run_end_to_end():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    config = MaskedTextConfig(mask_unit="word", mask_ratio_per="sample", min_masked=1, dropout=0.0)
    loss = MaskedTextLoss(config, 16, 1024, 10)
    text = encoder.encode(CAPTIONS)
    mask = loss.draw_mask(text, encoder)
    assert (mask.sum(1) >= 1).all() and not (mask & ~text.word_mask).any()
    assert torch.isfinite(loss(inputs_for(text, encoder, torch.randn(2, 5, 16))))


def test_captions_of_another_length_are_refused():
    encoder = tiny_encoder(length=12)
    loss = MaskedTextLoss(MaskedTextConfig(), 16, 1024, 10)
    with pytest.raises(ValueError, match="built for captions of 10 tokens, got 12"):
        loss(inputs_for(encoder.encode(CAPTIONS), encoder, torch.randn(2, 5, 16)))


# ------------------------------------------------------------------------------------------
# vocabulary = "captions": the head scores the training captions' word tokens only
# ------------------------------------------------------------------------------------------
def test_the_caption_vocabulary_is_the_sorted_word_tokens_of_the_training_captions():
    encoder = tiny_encoder()
    captions = ["a red bird", "a blue bird sits"]
    context = BuildContext(text_encoder=encoder, train_captions=lambda: iter(captions))
    loss = build_masked_text(MaskedTextConfig(vocabulary="captions"), context)
    ids, _, words = encoder.tokenize(captions)
    expected = sorted(set(ids[words].tolist()))  # BOS, EOS and padding are never targets
    assert loss.head.vocabulary_ids.tolist() == expected and len(expected) == 5
    assert loss.head.bias.shape == (5,)
    assert set(loss.state_dict()) >= {"head.vocabulary_ids", "head.bias"}  # the subset travels with a checkpoint


def test_the_official_full_vocabulary_keeps_the_official_state():
    loss = build_masked_text(MaskedTextConfig(), BuildContext(text_encoder=tiny_encoder()))
    assert MaskedTextConfig().vocabulary == "full"
    assert loss.head.vocabulary_ids is None and "head.vocabulary_ids" not in loss.state_dict()
    assert loss.head.bias.shape == (1024,)


def test_the_caption_vocabulary_needs_the_training_captions():
    with pytest.raises(ValueError, match="needs the training captions"):
        build_masked_text(MaskedTextConfig(vocabulary="captions"), BuildContext(text_encoder=tiny_encoder()))


SUBSET = torch.tensor([3, 5, 6, 7, 9])  # the word tokens of the captions below, sorted


def _full_and_restricted(smoothing: float) -> tuple[MaskedTextLoss, MaskedTextLoss]:
    """A full-vocabulary loss and one restricted to SUBSET with the same weights (bias b[SUBSET])."""
    torch.manual_seed(0)
    config = MaskedTextConfig(dropout=0.0, label_smoothing=smoothing)
    full = MaskedTextLoss(config, 8, 12, 6)
    with torch.no_grad():
        for parameter in full.parameters():
            parameter.normal_(0, 0.4)
    restricted = MaskedTextLoss(config, 8, 12, 6, vocabulary_ids=SUBSET)
    restricted.load_state_dict(
        {**full.state_dict(), "head.bias": full.head.bias[SUBSET], "head.vocabulary_ids": SUBSET}
    )
    return full, restricted


def test_restricted_logits_are_the_full_heads_logits_at_the_subset_columns():
    full, restricted = _full_and_restricted(0.1)
    hidden, table = torch.randn(4, 8), torch.randn(12, 8)
    torch.testing.assert_close(restricted.head(hidden, table), full.head(hidden, table)[:, SUBSET])
    columns = restricted.head.columns(torch.tensor([9, 3, 6]))
    assert columns.tolist() == [4, 0, 2] and restricted.head.token_ids(columns).tolist() == [9, 3, 6]
    assert torch.equal(restricted.head.bias, full.head.bias[SUBSET])  # entry j is b of token SUBSET[j]


@pytest.mark.parametrize("smoothing", [0.1, 0.0])
def test_restricted_loss_is_the_full_loss_with_the_other_columns_removed(smoothing):
    """Documented difference: the softmax normaliser and the smoothing mean run over the subset.

    By hand, from the full head's logits z (same weights) at the masked rows: keep z[SUBSET], then
    (1 - eps)(-log softmax(z_sub)[y]) + eps * mean(-log softmax(z_sub)), averaged over the rows.
    """
    full, restricted = _full_and_restricted(smoothing)
    ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 9, 3, 2, 0, 0]])
    pad = ids != 0
    text = TextFeatures(ids, pad, pad & (ids > 2), torch.randn(2, 6, 8), torch.randn(2, 8))
    encoder = SimpleNamespace(token_embedding=torch.randn(12, 8))
    codes = torch.randn(2, 5, 8)
    masked = torch.tensor([[False, True, False, True, False, False], [False, False, True, False, False, False]])
    value = restricted.masked_loss(inputs_for(text, encoder, codes), masked)

    hidden = full.decode(full.decoder_inputs(inputs_for(text, encoder, codes), masked), codes, pad)
    logits = full.head(hidden[masked], encoder.token_embedding).detach().double()  # m v, every column
    kept = logits[:, SUBSET]  # the excluded columns removed
    log_p = kept - kept.logsumexp(-1, keepdim=True)
    rows = [SUBSET.tolist().index(token) for token in ids[masked].tolist()]  # 5, 7, 3 -> columns 1, 3, 0
    expected = ((1 - smoothing) * -log_p[range(3), rows] + smoothing * -log_p.mean(-1)).sum() / (3 + 5e-6)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    official = full.masked_loss(inputs_for(text, encoder, codes), masked)
    assert official.item() > value.item()  # the full softmax spreads mass over the removed columns too


def test_a_target_outside_the_caption_vocabulary_is_an_error_naming_the_token():
    _, restricted = _full_and_restricted(0.1)
    with pytest.raises(ValueError, match="token id 4 is not in the head's vocabulary of 5 caption tokens"):
        restricted.head.columns(torch.tensor([3, 4]))


def test_loading_a_checkpoint_adopts_its_caption_vocabulary():
    _, restricted = _full_and_restricted(0.1)
    other = MaskedTextLoss(restricted.config, 8, 12, 6, vocabulary_ids=torch.tensor([2, 4]))
    bias = other.head.bias
    other.load_state_dict(restricted.state_dict())
    assert torch.equal(other.head.vocabulary_ids, SUBSET)
    assert other.head.bias is bias and torch.equal(bias, restricted.head.bias)  # resized in place


# ------------------------------------------------------------------------------------------
# masked-contextual re-encoding on the used columns only
# ------------------------------------------------------------------------------------------
class PositionwiseEncoder:
    """An encoder whose states are per-token (no mixing across positions) and that records its input."""

    mask_placeholder_id = 3
    padding_invisible = True

    def __init__(self, embedding: torch.Tensor) -> None:
        self.token_embedding = embedding
        self.widths: list[int] = []

    def encode_ids(self, ids: torch.Tensor, pad_mask: torch.Tensor):
        self.widths.append(ids.shape[1])
        return torch.tanh(self.token_embedding[ids] * 2.0), None


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_reencoding_the_used_columns_gives_the_real_tokens_the_full_length_states(causal):
    encoder = tiny_encoder(causal=causal)
    text = encoder.encode(["a red bird", "a blue bird sits on it"])  # 5 and 8 real tokens of 10
    masked = torch.zeros(2, 10, dtype=torch.bool)
    masked[:, 2] = True
    trimmed = encode_masked(encoder, text, masked)
    placeholder = torch.where(masked, torch.full_like(text.ids, 3), text.ids)
    full, _ = encoder.encode_ids(placeholder, text.pad_mask)
    pad = text.pad_mask
    torch.testing.assert_close(trimmed[pad], full[pad])
    assert torch.equal(trimmed[:, 8:], torch.zeros(2, 2, 16))  # padding in every caption: zero rows


@pytest.mark.parametrize("attend_padding", [True, False])
def test_trimming_leaves_the_masked_text_loss_unchanged_bit_for_bit(attend_padding):
    """Padding rows are zeroed before the decoder, so only the real tokens' states matter: with an encoder
    whose real-token states do not depend on the sequence length, the loss is the same to the bit."""
    torch.manual_seed(0)
    encoder = PositionwiseEncoder(torch.randn(1024, 16))
    reference = tiny_encoder()
    text = reference.encode(CAPTIONS[:1] + ["a bird"])  # 9 and 4 real tokens of 10
    config = MaskedTextConfig(text_input="masked-contextual", attend_padding=attend_padding, dropout=0.0)
    loss = MaskedTextLoss(config, 16, 1024, 10)
    codes = torch.randn(2, 5, 16)
    trimmed = loss.masked_loss(inputs_for(text, encoder, codes), MASK)
    encoder.padding_invisible = False
    untrimmed = loss.masked_loss(inputs_for(text, encoder, codes), MASK)
    assert encoder.widths == [9, 10]
    assert torch.equal(trimmed, untrimmed)


def test_an_encoder_that_does_not_hide_padding_is_encoded_at_full_length():
    encoder = PositionwiseEncoder(torch.randn(1024, 16))
    encoder.padding_invisible = False
    text = tiny_encoder().encode(["a bird"])
    encode_masked(encoder, text, torch.zeros(1, 10, dtype=torch.bool))
    assert encoder.widths == [10]


# ------------------------------------------------------------------------------------------
# factored_cross_attention: keys and values from the code ViT's features, proj folded in
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [1, 2])
def test_factored_cross_attention_gives_the_same_loss_and_gradients_up_to_rounding(heads):
    torch.manual_seed(0)
    encoder = tiny_encoder()
    text = encoder.encode(CAPTIONS)
    features = torch.randn(2, 5, 4, requires_grad=True)  # b (1+n) width, a code ViT narrower than W = 16
    proj = torch.randn(4, 16, requires_grad=True)
    losses = {}
    for factored in (False, True):
        config = MaskedTextConfig(dropout=0.0, decoder_heads=heads, factored_cross_attention=factored)
        torch.manual_seed(1)
        loss = MaskedTextLoss(config, 16, 1024, 10)
        with torch.no_grad():  # visible biases: the key bias is constant along a softmax row, the value bias not
            for layer in loss.decoder.layers:
                layer.cross_attention.w_k.bias.normal_()
                layer.cross_attention.w_v.bias.normal_()
        inputs = inputs_for(text, encoder, features @ proj)
        inputs.vit_features, inputs.vit_proj = features, proj
        value = loss.masked_loss(inputs, MASK)
        cross = loss.decoder.layers[0].cross_attention
        grads = torch.autograd.grad(value, [features, proj, cross.w_k.weight, cross.w_v.weight, cross.w_v.bias])
        losses[factored] = (value, grads)
    (official, official_grads), (factored, factored_grads) = losses[False], losses[True]
    assert not MaskedTextConfig().factored_cross_attention  # official: proj first
    torch.testing.assert_close(factored, official)
    for a, b in zip(factored_grads, official_grads, strict=True):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------
# decoder_width: the decoder runs at d < W between an in-projection and the head's A (d -> W)
# ------------------------------------------------------------------------------------------
def _vit_inputs(text: TextFeatures, encoder, vit: CodeViT, quant: torch.Tensor) -> AlignmentInputs:
    """Inputs with the code ViT's tokens and their factors, as the alignment module passes them."""
    features = vit.features(quant)
    inputs = inputs_for(text, encoder, features @ vit.proj)
    inputs.vit_features, inputs.vit_proj = features, vit.proj
    return inputs


def test_unset_decoder_width_is_the_official_module_bit_for_bit():
    """Same seed, same parameters, same loss and gradients as a module built without the key, and
    the official pipeline composed by hand from its parts: where(masked, m, rows) * pad -> decoder at W
    -> A (W -> W) at the masked rows -> label-smoothed CE."""
    encoder = tiny_encoder()
    text = encoder.encode(CAPTIONS)
    codes = torch.randn(2, 5, 16)
    masked = MASK & text.word_mask
    modules = []
    for config in (MaskedTextConfig(dropout=0.0), MaskedTextConfig(dropout=0.0, decoder_width=None)):
        torch.manual_seed(0)
        modules.append(MaskedTextLoss(config, 16, 1024, 10))
    official, unset = modules
    assert MaskedTextConfig().decoder_width is None and unset.input_proj is None
    assert {k: v.shape for k, v in unset.state_dict().items()} == {k: v.shape for k, v in official.state_dict().items()}
    assert unset.mask_embedding.shape == (10, 16) and unset.head.fc.weight.shape == (16, 16)
    assert not any(k.startswith("input_proj") for k in unset.state_dict())
    for a, b in zip(unset.parameters(), official.parameters(), strict=True):
        assert torch.equal(a, b)

    results = []
    for loss in (official, unset):
        value = loss.masked_loss(inputs_for(text, encoder, codes), masked)
        results.append((value, torch.autograd.grad(value, list(loss.parameters()))))
    (value, grads), (unset_value, unset_grads) = results
    assert torch.equal(value, unset_value)
    assert all(torch.equal(a, b) for a, b in zip(grads, unset_grads, strict=True))

    pad = text.pad_mask.bool()
    h0 = torch.where(masked.unsqueeze(-1), official.mask_embedding, text.token_states) * pad.unsqueeze(-1)
    hidden = official.decoder(h0, codes, None)
    logits = official.head(hidden[masked & pad], encoder.token_embedding)
    by_hand = label_smoothed_nll(logits, text.ids[masked & pad].long(), 0.1).sum() / ((masked & pad).sum() + 5e-6)
    assert torch.equal(value, by_hand)


@pytest.mark.parametrize("factored", [False, True], ids=["codes-at-W", "factored"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"attend_padding": False},
        {"decoder": "two-stage"},
        {"text_input": "masked-contextual"},
        {"text_input": "token-embedding", "attend_padding": False},
    ],
    ids=["official", "padmask", "two-stage", "masked-contextual", "token-embedding"],
)
def test_a_narrower_decoder_runs_at_its_width_and_trains_every_part_and_the_code_vit(options, factored):
    torch.manual_seed(0)
    encoder = tiny_encoder()
    text = encoder.encode(CAPTIONS)
    config = MaskedTextConfig(
        dropout=0.0, decoder_width=8, decoder_heads=2, factored_cross_attention=factored, **options
    )
    loss = MaskedTextLoss(config, 16, 1024, 10)
    assert loss.decoder_width == 8 and loss.mask_embedding.shape == (10, 8)
    assert loss.input_proj.weight.shape == (8, 16)  # text rows W -> d
    cross = next(layer.cross_attention for layer in loss.decoder.layers if layer.cross_attention is not None)
    assert cross.w_k.weight.shape == (8, 16) and cross.w_q.weight.shape == (8, 8)  # keys from the W-wide codes
    assert loss.decoder.layers[-1].ffn.linear1.weight.shape == (8, 8)
    assert loss.head.fc.weight.shape == (16, 8) and loss.head.bias.shape == (1024,)  # A: d -> W, full vocabulary

    vit = CodeViT(4, (2, 2), text_width=16, layers=1, width=4)
    quant = torch.randn(2, 4, 2, 2)
    inputs = _vit_inputs(text, encoder, vit, quant)
    assert loss.decoder_inputs(inputs, MASK).shape == (2, 10, 8)
    value = loss.masked_loss(inputs, MASK)
    assert torch.isfinite(value) and value > 0
    value.backward()
    for name, parameter in [*loss.named_parameters(), *(("vit." + n, p) for n, p in vit.named_parameters())]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_factored_cross_attention_of_a_narrower_decoder_is_the_same_function():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    text = encoder.encode(CAPTIONS)
    features = torch.randn(2, 5, 4, requires_grad=True)
    proj = torch.randn(4, 16, requires_grad=True)
    results = []
    for factored in (False, True):
        torch.manual_seed(1)
        config = MaskedTextConfig(dropout=0.0, decoder_width=8, decoder_heads=2, factored_cross_attention=factored)
        loss = MaskedTextLoss(config, 16, 1024, 10)
        inputs = inputs_for(text, encoder, features @ proj)
        inputs.vit_features, inputs.vit_proj = features, proj
        value = loss.masked_loss(inputs, MASK)
        results.append((value, torch.autograd.grad(value, [features, proj, loss.input_proj.weight])))
    (plain, plain_grads), (factored, factored_grads) = results
    torch.testing.assert_close(factored, plain)
    for a, b in zip(factored_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_decoder_heads_must_divide_the_decoder_width_at_config_time():
    with pytest.raises(ValueError, match=r"decoder_heads = 4 does not divide decoder_width = 6"):
        MaskedTextConfig(decoder_width=6, decoder_heads=4)
    with pytest.raises(ConfigError) as caught:
        structure_component("alignment_loss", {"type": "masked-text", "decoder_width": 6, "decoder_heads": 4}, "$.a")
    assert any(p.startswith("$.a.decoder_width:") and "decoder_heads = 4" in p for p in caught.value.problems)
    MaskedTextConfig(decoder_width=8, decoder_heads=4)  # a divisor of d need not divide W
    assert MaskedTextLoss(MaskedTextConfig(decoder_width=8, decoder_heads=4), 6, 50, 4).decoder_width == 8


@pytest.mark.parametrize("vocabulary", ["full", "captions"])
def test_a_narrower_decoder_survives_a_checkpoint_round_trip(vocabulary):
    torch.manual_seed(0)
    encoder = tiny_encoder()
    text = encoder.encode(CAPTIONS)
    codes = torch.randn(2, 5, 16)
    config = MaskedTextConfig(dropout=0.0, decoder_width=8, vocabulary=vocabulary)
    ids = torch.unique(text.ids[text.word_mask.bool()]) if vocabulary == "captions" else None
    trained = MaskedTextLoss(config, 16, 1024, 10, vocabulary_ids=ids)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.normal_(0, 0.3)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    restored = MaskedTextLoss(config, 16, 1024, 10, vocabulary_ids=ids)
    restored.load_state_dict(torch.load(buffer))
    assert "input_proj.weight" in restored.state_dict()
    expected = trained.masked_loss(inputs_for(text, encoder, codes), MASK)
    assert torch.equal(restored.masked_loss(inputs_for(text, encoder, codes), MASK), expected)
    with pytest.raises(RuntimeError, match="input_proj"):  # an official module cannot take it silently
        MaskedTextLoss(MaskedTextConfig(vocabulary=vocabulary), 16, 1024, 10, vocabulary_ids=ids).load_state_dict(
            trained.state_dict()
        )
