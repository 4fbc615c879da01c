"""relation (docs/method.md: Relationship alignment): the official steps 1-6 and the options."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import erf

from lgvq_core.alignment.base import AlignmentInputs
from lgvq_core.alignment.loss_configs import RelationConfig
from lgvq_core.alignment.relation import RelationLoss, build_relation
from lgvq_core.context import BuildContext
from lgvq_core.text_encoder import TextFeatures

# One caption: BOS w EOS PAD; W = D = 2; three image positions (grid 1x3).
IDS = torch.tensor([[1, 7, 2, 0]])
PAD = IDS != 0
WORDS = torch.tensor([[False, True, False, False]])
STATES = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [5.0, 5.0]]])
VIT = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])  # global token first
QUANT = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]]).T.reshape(1, 2, 1, 3)  # codes c1, c2, c3


def _inputs(states=STATES, vit=VIT, quant=QUANT, codebook=None, indices=None, encoder=None) -> AlignmentInputs:
    text = TextFeatures(IDS, PAD, WORDS, states, torch.zeros(1, 2))
    return AlignmentInputs(
        quant=quant,
        text=text,
        vit_tokens=vit,
        codebook=codebook if codebook is not None else torch.zeros(3, 2),
        indices=indices if indices is not None else torch.zeros(1, 1, 3, dtype=torch.long),
        text_encoder=encoder,
    )


def _identity_loss(**options) -> RelationLoss:
    return RelationLoss(RelationConfig(code_projection="none", **options), code_dim=2, width=2)


def test_hand_computed_case_with_the_official_steps():
    # Matches: BOS (1,0) -> c1; w (0,1) -> c2; EOS (2,1)/sqrt5 -> c1 (cos .894 > .447). All s_k > 0.
    r = 1 / math.sqrt(2)
    e = (2 / math.sqrt(5), 1 / math.sqrt(5))
    p = [[1, r, 1], [r, 1, r], [1, r, 1]]
    q = [[1, 0, e[0]], [0, 1, e[1]], [e[0], e[1], 1]]
    expected = sum((p[i][j] - q[i][j]) ** 2 for i in range(3) for j in range(3)) / 16  # padding counts as zeros
    assert _identity_loss()(_inputs()).item() == pytest.approx(expected, rel=1e-6)


def test_pairs_and_reduction_options():
    r = 1 / math.sqrt(2)
    e = (2 / math.sqrt(5), 1 / math.sqrt(5))
    full = [(0, r - 0), (0, 1 - e[0]), (1, r - e[1])]  # distinct off-diagonal pairs (i<j) and their p - q
    off_diag_sum = 2 * sum(d * d for _, d in full)
    # reduction = mean-valid over the 3x3 non-pad pairs (diagonal terms are 0 here)
    assert _identity_loss(reduction="mean-valid")(_inputs()).item() == pytest.approx(off_diag_sum / 9, rel=1e-6)
    # words: only token 1 is a word -> a single diagonal pair, p = q = 1
    assert _identity_loss(pairs="words")(_inputs()).item() == pytest.approx(0.0, abs=1e-7)
    assert _identity_loss(pairs="words-offdiag", reduction="mean-valid")(_inputs()).item() == 0.0


def test_words_offdiag_excludes_the_diagonal_even_when_the_match_score_is_zero():
    # Token 1 is orthogonal-ish to every position: (0, 1) vs positions (1,0), (1,0), (-1,0): max cosine is 0.
    vit = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    with_diag = _identity_loss(pairs="words")(_inputs(vit=vit)).item()
    assert with_diag == pytest.approx(1 / 16)  # p_11 = 0 (zero code), q_11 = 1
    assert _identity_loss(pairs="words-offdiag")(_inputs(vit=vit)).item() == 0.0


def test_negative_match_flips_the_code_only_with_scale_by_match():
    # The word (-1, -0.5) matches c2's position with a negative cosine (-0.447).
    states = STATES.clone()
    states[0, 1] = torch.tensor([-1.0, -0.5])
    vit = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    scaled = _identity_loss()
    unscaled = _identity_loss(scale_by_match=False)
    w = np.array([[1.0, 0.0], [-1.0, -0.5], [2.0, 1.0]])
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    q = w @ w.T

    def expected(sign: float) -> float:
        # BOS -> c1, word -> c2 (times sign), EOS -> c1 (cos .894 vs .447 vs .949: position 3!)
        c = np.array([[1.0, 0.0], sign * np.array([1.0, 1.0]) / math.sqrt(2), [0.0, -1.0]])
        return float(((c @ c.T - q) ** 2).sum() / 16)

    assert scaled(_inputs(states=states, vit=vit)).item() == pytest.approx(expected(-1.0), rel=1e-6)
    assert unscaled(_inputs(states=states, vit=vit)).item() == pytest.approx(expected(1.0), rel=1e-6)


def _reference(loss: RelationLoss, states, vit, quant, pad) -> float:
    """The six official steps (docs/method.md: Relationship alignment) in numpy, one token at a time."""
    p = {k: v.detach().double().numpy() for k, v in loss.state_dict().items()}
    total = 0.0
    batch, length, _ = states.shape
    for b in range(batch):
        w = states[b] / np.linalg.norm(states[b], axis=1, keepdims=True)
        o = vit[b, 1:] / np.linalg.norm(vit[b, 1:], axis=1, keepdims=True)
        codes = quant[b].reshape(quant.shape[1], -1).T
        c = np.zeros((length, p["projection.0.weight"].shape[0]))
        for k in range(length):
            sims = o @ w[k]
            j = int(np.argmax(sims))
            h = codes[j] @ p["projection.0.weight"].T + p["projection.0.bias"]
            h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
            h = (h - h.mean()) / np.sqrt(h.var() + 1e-5) * p["projection.2.weight"] + p["projection.2.bias"]
            h = sims[j] * h
            c[k] = h / np.linalg.norm(h) * pad[b, k]
        wp = w * pad[b][:, None]
        total += ((c @ c.T - wp @ wp.T) ** 2).sum()
    return total / (batch * length * length)


def test_official_projection_matches_a_numpy_reference():
    torch.manual_seed(0)
    width, dim, length, n = 6, 4, 5, 9
    loss = RelationLoss(RelationConfig(), code_dim=dim, width=width)
    with torch.no_grad():
        for parameter in loss.parameters():
            parameter.normal_(0, 0.5)
    states, vit, quant = torch.randn(2, length, width), torch.randn(2, n + 1, width), torch.randn(2, dim, 3, 3)
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    text = TextFeatures(torch.ones(2, length, dtype=torch.long), pad, pad, states, torch.zeros(2, width))
    inputs = AlignmentInputs(quant, text, vit, torch.zeros(4, dim), torch.zeros(2, 3, 3, dtype=torch.long), None)
    expected = _reference(loss, states.double().numpy(), vit.double().numpy(), quant.double().numpy(), pad.numpy())
    assert loss(inputs).item() == pytest.approx(expected, rel=1e-5)


def test_projection_init_and_the_none_projection_width_check():
    torch.manual_seed(0)
    loss = RelationLoss(RelationConfig(), code_dim=256, width=64)
    assert loss.projection[0].weight.std().item() == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match=r'code_projection = "none" compares codes \(256-d\) with words \(64-d\)'):
        RelationLoss(RelationConfig(code_projection="none"), code_dim=256, width=64)


def test_gradient_goes_to_quant_in_the_official_variant_and_to_the_codebook_with_codebook_source():
    quant = QUANT.clone().requires_grad_(True)
    codebook = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]], requires_grad=True)
    indices = torch.tensor([[[0, 1, 2]]])
    states = STATES.clone().requires_grad_(True)
    official = RelationLoss(RelationConfig(), code_dim=2, width=2)
    official(_inputs(states=states, quant=quant, codebook=codebook, indices=indices)).backward()
    assert quant.grad.abs().sum() > 0 and codebook.grad is None and states.grad is None

    quant.grad = None
    paper = RelationLoss(RelationConfig(code_source="codebook"), code_dim=2, width=2)
    value = paper(_inputs(quant=quant, codebook=codebook, indices=indices))
    value.backward()
    assert codebook.grad.abs().sum() > 0 and quant.grad is None
    # with indices = positions, the codebook entries are the straight-through codes: same loss
    assert value.item() == pytest.approx(official(_inputs(quant=quant, codebook=codebook, indices=indices)).item())


def test_codebook_source_needs_one_index_per_position():
    loss = RelationLoss(RelationConfig(code_source="codebook"), code_dim=2, width=2)
    with pytest.raises(ValueError, match="one code index per position"):
        loss(_inputs(indices=torch.zeros(1, 3, 1, 3, dtype=torch.long)))


def test_token_embedding_word_features_come_from_the_encoders_embedding_layer():
    calls = []

    def embed_ids(ids):
        calls.append(ids)
        return STATES

    encoder = SimpleNamespace(embed_ids=embed_ids)
    loss = _identity_loss(word_features="token-embedding")
    zero_states = torch.zeros_like(STATES)
    assert loss(_inputs(states=zero_states, encoder=encoder)).item() == pytest.approx(
        _identity_loss()(_inputs()).item()
    )
    assert torch.equal(calls[0], IDS)


def test_factory_reads_the_widths_from_the_context():
    encoder = SimpleNamespace(width=12)
    loss = build_relation(RelationConfig(), BuildContext(text_encoder=encoder, code_dim=5))
    assert loss.projection[0].weight.shape == (12, 5)
    with pytest.raises(ValueError, match="code dim"):
        build_relation(RelationConfig(), BuildContext(text_encoder=encoder))


# ------------------------------------------------------------------------------------------
# the cheap order: g at the matched positions only, no autograd through the match
# ------------------------------------------------------------------------------------------
def _every_position_loss(loss: RelationLoss, inputs: AlignmentInputs) -> torch.Tensor:
    """Steps 1-6 in the order they are written: g over every position of the grid, then gather at the
    matched positions; the match (and its score) stays in the autograd graph."""
    config, text = loss.config, inputs.text
    codes_vit = inputs.vit_tokens[:, 1:]
    if config.word_features == "contextual":
        words = text.token_states.detach()
    else:
        words = inputs.text_encoder.embed_ids(text.ids).detach()
    valid = (text.pad_mask if config.pairs == "all-non-pad" else text.word_mask).bool()
    word_dirs = torch.nn.functional.normalize(words, dim=-1)
    score, position = (word_dirs @ torch.nn.functional.normalize(codes_vit, dim=-1).transpose(1, 2)).max(-1)
    if config.code_source == "straight-through":
        grid = inputs.quant.flatten(2).transpose(1, 2)  # b n d
    else:
        grid = inputs.codebook[inputs.indices.flatten(1)]  # b n d
    projected = loss.projection(grid)  # g(quant): b n w
    code = projected.gather(1, position.unsqueeze(-1).expand(-1, -1, projected.shape[-1]))
    if config.scale_by_match:
        code = code * score.unsqueeze(-1)
    keep = valid.unsqueeze(-1).to(code.dtype)
    code = torch.nn.functional.normalize(code, dim=-1) * keep
    word_dirs = word_dirs * keep
    squared = (code @ code.transpose(1, 2) - (word_dirs @ word_dirs.transpose(1, 2)).detach()).square()
    pair_mask = valid.unsqueeze(2) & valid.unsqueeze(1)
    if config.pairs == "words-offdiag":
        pair_mask = pair_mask & ~torch.eye(valid.shape[1], dtype=torch.bool)
    squared = squared * pair_mask.to(squared.dtype)
    if config.reduction == "mean-all":
        return squared.sum() / squared.numel()
    return squared.sum() / pair_mask.sum().clamp_min(1)


@pytest.mark.parametrize("scale_by_match", [True, False])
@pytest.mark.parametrize("reduction", ["mean-all", "mean-valid"])
@pytest.mark.parametrize("pairs", ["all-non-pad", "words", "words-offdiag"])
@pytest.mark.parametrize("word_features", ["contextual", "token-embedding"])
@pytest.mark.parametrize("code_source", ["straight-through", "codebook"])
def test_projecting_the_matched_codes_only_is_projecting_every_position_then_gathering(
    code_source, word_features, pairs, reduction, scale_by_match
):
    config = RelationConfig(
        code_source=code_source,
        word_features=word_features,
        pairs=pairs,
        reduction=reduction,
        scale_by_match=scale_by_match,
    )
    torch.manual_seed(0)
    batch, length, width, dim, side, size = 3, 9, 24, 6, 4, 11
    loss = RelationLoss(config, code_dim=dim, width=width)
    with torch.no_grad():
        for parameter in loss.parameters():
            parameter.normal_(0, 0.5)
    ids = torch.randint(3, 50, (batch, length))
    pad = torch.arange(length) < torch.tensor([[9], [6], [3]])
    words = pad & (torch.arange(length) > 0)
    embedding = torch.randn(50, width)
    encoder = SimpleNamespace(embed_ids=lambda ids: embedding[ids])
    text = TextFeatures(ids * pad, pad, words, torch.randn(batch, length, width), torch.zeros(batch, width))
    quant = torch.randn(batch, dim, side, side, requires_grad=True)
    codebook = torch.randn(size, dim, requires_grad=True)
    indices = torch.randint(0, size, (batch, side, side))
    vit = torch.randn(batch, side * side + 1, width, requires_grad=True)
    inputs = AlignmentInputs(quant, text, vit, codebook, indices, encoder)
    leaves = [quant, codebook, *loss.parameters()]

    value = loss(inputs)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    reference = _every_position_loss(loss, inputs)
    reference_grads = torch.autograd.grad(reference, [*leaves, vit], allow_unused=True)

    torch.testing.assert_close(value, reference, rtol=1e-6, atol=0)
    for grad, expected in zip(grads, reference_grads, strict=False):
        assert (grad is None) == (expected is None)
        if grad is not None:  # a code matched by several tokens sums its gradients in another order
            torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    # the score's exact gradient is zero: the reference's graph through the match carries rounding noise only
    assert reference_grads[-1] is None or reference_grads[-1].abs().max() < 1e-6


def test_the_code_vit_gets_no_gradient_from_the_relation_loss():
    torch.manual_seed(0)
    loss = RelationLoss(RelationConfig(), code_dim=4, width=6)
    vit = torch.randn(1, 4, 6, requires_grad=True)
    pad = torch.ones(1, 5, dtype=torch.bool)
    text = TextFeatures(torch.ones(1, 5, dtype=torch.long), pad, pad, torch.randn(1, 5, 6), torch.zeros(1, 6))
    quant = torch.randn(1, 4, 1, 3, requires_grad=True)
    value = loss(AlignmentInputs(quant, text, vit, torch.zeros(2, 4), torch.zeros(1, 1, 3, dtype=torch.long), None))
    value.backward()
    assert vit.grad is None and quant.grad.abs().sum() > 0
