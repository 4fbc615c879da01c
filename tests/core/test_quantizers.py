"""The built-in quantizers `vq`, `vq-ema` and `cosine` (docs/method.md: Quantizers and β placement)."""

from __future__ import annotations

import math

import pytest
import torch

from lgvq_core.errors import ConfigError
from lgvq_core.quantizers.base import QuantizerOutput
from lgvq_core.quantizers.cosine import CosineVectorQuantizer
from lgvq_core.quantizers.ema import EMAVectorQuantizer
from lgvq_core.quantizers.lookup import batch_code_stats, code_counts, split_squared_error, squared_distances
from lgvq_core.quantizers.vq import VectorQuantizer
from lgvq_core.registry import build

# A 2-D toy: codes at the origin and on both axes.
TOY_CODES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
# Four latents laid out as B=1, h=2, w=2; flattened `(b h w) d` they are the rows below.
TOY_LATENT_ROWS = torch.tensor([[0.9, 0.2], [0.1, 0.8], [-0.3, 0.1], [0.6, 0.5]])
# Nearest codes by hand: (0.9,0.2)->e1; (0.1,0.8)->e2; (-0.3,0.1)->e0;
# (0.6,0.5): |.-e1|²=0.41 < |.-e0|²=|.-e2|²=0.61 -> e1.
TOY_NEAREST = torch.tensor([1, 2, 0, 1])


def toy_latents() -> torch.Tensor:
    return TOY_LATENT_ROWS.view(1, 2, 2, 2).permute(0, 3, 1, 2).contiguous().requires_grad_(True)  # b d h w


def toy_vq(beta_placement: str = "commitment", beta: float = 0.25) -> VectorQuantizer:
    quantizer = VectorQuantizer(codebook_size=3, dim=2, beta=beta, beta_placement=beta_placement)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(TOY_CODES)
    return quantizer


# ----------------------------------------------------------------------------------------- vq
def test_vq_picks_the_hand_computed_nearest_codes_in_b_h_w_layout():
    out = toy_vq()(toy_latents())
    assert isinstance(out, QuantizerOutput)
    assert out.indices.shape == (1, 2, 2)
    assert out.indices.flatten().tolist() == TOY_NEAREST.tolist()
    expected = TOY_CODES[TOY_NEAREST].view(1, 2, 2, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.quant, expected)


def test_codebook_starts_uniform_in_plus_minus_one_over_k():
    weights = VectorQuantizer(codebook_size=64, dim=8).codebook
    assert weights.shape == (64, 8)
    assert weights.abs().max() <= 1 / 64
    assert weights.std() > 0


@pytest.mark.parametrize(
    ("placement", "codebook_weight", "commitment_weight"),
    [("commitment", 1.0, 0.25), ("codebook", 0.25, 1.0)],
)
def test_beta_placement_sets_loss_value_and_which_side_gets_which_gradient(
    placement, codebook_weight, commitment_weight
):
    quantizer = toy_vq(placement)
    z = toy_latents()
    out = quantizer(z)
    chosen = TOY_CODES[TOY_NEAREST]
    mse = ((chosen - TOY_LATENT_ROWS) ** 2).mean()
    torch.testing.assert_close(out.loss, (codebook_weight + commitment_weight) * mse)

    out.loss.backward()
    numel = TOY_LATENT_ROWS.numel()
    # encoder side: commitment_weight * 2 (z - z_q) / numel, laid back out as b d h w
    expected_z = commitment_weight * 2 * (TOY_LATENT_ROWS - chosen) / numel
    torch.testing.assert_close(z.grad, expected_z.view(1, 2, 2, 2).permute(0, 3, 1, 2))
    # codebook side: codebook_weight * 2 Σ_{n -> k} (e_k - z_n) / numel
    expected_codes = torch.zeros(3, 2).index_add_(0, TOY_NEAREST, 2 * (chosen - TOY_LATENT_ROWS) / numel)
    torch.testing.assert_close(quantizer.embedding.weight.grad, codebook_weight * expected_codes)


def test_straight_through_passes_the_upstream_gradient_to_the_latents_unchanged():
    quantizer = toy_vq()
    z = toy_latents()
    upstream = torch.arange(8.0).view(1, 2, 2, 2)
    quantizer(z).quant.backward(upstream)
    torch.testing.assert_close(z.grad, upstream)
    assert quantizer.embedding.weight.grad is None or not quantizer.embedding.weight.grad.any()


def test_decode_indices_round_trips_the_quantized_codes():
    quantizer = VectorQuantizer(codebook_size=32, dim=6)
    z = torch.randn(3, 6, 4, 5) * 0.05
    out = quantizer(z)
    decoded = quantizer.decode_indices(out.indices)
    assert decoded.shape == (3, 6, 4, 5)
    torch.testing.assert_close(decoded, out.quant)


def test_lookup_equals_brute_force_nearest_neighbour():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(codebook_size=50, dim=5)
    with torch.no_grad():
        quantizer.embedding.weight.normal_()
    z = torch.randn(2, 5, 3, 4)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = ((flat[:, None, :] - quantizer.codebook[None]) ** 2).sum(-1)  # n k d -> n k (test only)
    assert quantizer(z).indices.flatten().tolist() == brute.argmin(1).tolist()
    torch.testing.assert_close(
        squared_distances(flat, quantizer.codebook.detach()), brute.detach(), rtol=1e-4, atol=1e-4
    )


def test_stats_are_batch_perplexity_and_usage_of_the_index_histogram():
    # counts (2, 2, 0, 0): p = (.5, .5) -> perplexity 2, usage 2/4
    stats = batch_code_stats(code_counts(torch.tensor([0, 1, 1, 0]), 4))
    torch.testing.assert_close(stats["perplexity"], torch.tensor(2.0))
    torch.testing.assert_close(stats["usage"], torch.tensor(0.5))
    # counts (3, 1, 0, 0, 0, 0, 0, 0): perplexity exp(-(.75 log .75 + .25 log .25))
    stats = batch_code_stats(code_counts(torch.tensor([[0, 0], [0, 1]]), 8))
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    torch.testing.assert_close(stats["perplexity"], torch.tensor(expected))
    torch.testing.assert_close(stats["usage"], torch.tensor(2 / 8))


def test_forward_reports_detached_batch_stats():
    out = toy_vq()(toy_latents())  # codes used: 1, 2, 0, 1 -> counts (1, 2, 1)
    expected = math.exp(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    torch.testing.assert_close(out.stats["perplexity"], torch.tensor(expected))
    torch.testing.assert_close(out.stats["usage"], torch.tensor(1.0))
    assert not any(value.requires_grad for value in out.stats.values())


def test_wrong_latent_width_is_rejected_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"B×2×h×w"):
        toy_vq()(torch.randn(1, 3, 2, 2))


# ------------------------------------------------------------------------------------- vq-ema
def toy_ema(**kwargs) -> EMAVectorQuantizer:
    quantizer = EMAVectorQuantizer(codebook_size=3, dim=2, **kwargs)
    quantizer.embedding.copy_(TOY_CODES)
    return quantizer


def laplace(counts: torch.Tensor, epsilon: float) -> torch.Tensor:
    total = counts.sum()
    return (counts + epsilon) / (total + len(counts) * epsilon) * total


def test_ema_first_step_sets_codes_to_smoothed_batch_means():
    quantizer = toy_ema(decay=0.99, epsilon=1e-5).train()
    out = quantizer(toy_latents())
    assert out.indices.flatten().tolist() == TOY_NEAREST.tolist()
    # zero-debiased EMA: after one step N = batch counts and m = batch sums
    counts = torch.tensor([1.0, 2.0, 1.0])
    sums = torch.zeros(3, 2).index_add_(0, TOY_NEAREST, TOY_LATENT_ROWS)
    expected = sums / laplace(counts, 1e-5)[:, None]
    torch.testing.assert_close(quantizer.codebook, expected)
    # the latents were quantized with the codebook from before the update
    torch.testing.assert_close(out.quant.permute(0, 2, 3, 1).reshape(-1, 2), TOY_CODES[TOY_NEAREST])


def test_ema_second_step_weights_old_and_new_statistics_by_the_decay():
    decay, epsilon = 0.9, 1e-3
    quantizer = toy_ema(decay=decay, epsilon=epsilon).train()
    first = TOY_LATENT_ROWS
    quantizer(toy_latents())
    codes_after_first = quantizer.codebook.clone()
    second = torch.tensor([[0.5, 0.0], [0.0, 0.4], [0.1, 0.1], [0.2, 0.0]])
    second_indices = ((second[:, None] - codes_after_first[None]) ** 2).sum(-1).argmin(1)
    quantizer(second.view(1, 2, 2, 2).permute(0, 3, 1, 2))

    def batch(rows, indices):
        return torch.bincount(indices, minlength=3).float(), torch.zeros(3, 2).index_add_(0, indices, rows)

    c1, s1 = batch(first, TOY_NEAREST)
    c2, s2 = batch(second, second_indices)
    # hidden_t = decay hidden_{t-1} + (1 - decay) value_t, hidden_0 = 0; average = hidden_t / (1 - decay^t)
    debias = 1 - decay**2
    counts = (decay * (1 - decay) * c1 + (1 - decay) * c2) / debias
    sums = (decay * (1 - decay) * s1 + (1 - decay) * s2) / debias
    torch.testing.assert_close(quantizer.codebook, sums / laplace(counts, epsilon)[:, None])


def test_ema_loss_is_beta_times_commitment_and_the_codebook_gets_no_gradient():
    quantizer = toy_ema(beta=0.5).train()
    z = toy_latents()
    out = quantizer(z)
    chosen = TOY_CODES[TOY_NEAREST]
    torch.testing.assert_close(out.loss, 0.5 * ((chosen - TOY_LATENT_ROWS) ** 2).mean())
    out.loss.backward()
    expected = 0.5 * 2 * (TOY_LATENT_ROWS - chosen) / TOY_LATENT_ROWS.numel()
    torch.testing.assert_close(z.grad, expected.view(1, 2, 2, 2).permute(0, 3, 1, 2))
    assert not quantizer.embedding.requires_grad
    assert list(quantizer.parameters()) == []


def test_ema_codebook_is_frozen_in_eval_mode():
    quantizer = toy_ema().eval()
    quantizer(toy_latents())
    torch.testing.assert_close(quantizer.codebook, TOY_CODES)
    assert quantizer.ema_steps.item() == 0


def test_dead_code_restart_moves_an_unused_code_onto_a_batch_latent():
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]])  # code 2 is far from every latent
    quantizer = EMAVectorQuantizer(codebook_size=3, dim=2, dead_code_threshold=0.5).train()
    quantizer.embedding.copy_(codes)
    torch.manual_seed(0)
    quantizer(toy_latents())
    restarted = quantizer.codebook[2]
    assert any(torch.equal(restarted, row) for row in TOY_LATENT_ROWS)
    # the restarted code's EMA statistics say "count = threshold, mean = that latent"
    debias = 1 - quantizer.decay
    torch.testing.assert_close(quantizer.ema_count[2] / debias, torch.tensor(0.5))
    torch.testing.assert_close(quantizer.ema_sum[2] / debias, 0.5 * restarted)
    # used codes are left to the EMA update
    assert quantizer.ema_count[:2].min() / debias >= 0.5
    assert not any(torch.equal(quantizer.codebook[0], row) for row in TOY_LATENT_ROWS)


def test_dead_code_restart_is_off_by_default():
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]])
    quantizer = EMAVectorQuantizer(codebook_size=3, dim=2).train()
    quantizer.embedding.copy_(codes)
    quantizer(toy_latents())
    # no latent picked code 2: sonnet's update leaves it at m/N = 0/eps = 0
    torch.testing.assert_close(quantizer.codebook[2], torch.zeros(2))


# ------------------------------------------------------------------------------------- cosine
def test_cosine_lookup_picks_the_most_similar_direction_not_the_closest_point():
    quantizer = CosineVectorQuantizer(codebook_size=2, dim=2)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[10.0, 0.0], [0.1, 0.1]]))
    z = torch.tensor([1.0, 0.2]).view(1, 2, 1, 1)
    # squared L2 prefers code 1 (0.82 vs 81.04); cosine prefers code 0 (0.981 vs 0.832)
    assert toy_nearest_l2(z, quantizer.embedding.weight) == 1
    out = quantizer(z)
    assert out.indices.item() == 0
    torch.testing.assert_close(out.quant.flatten(), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(quantizer.codebook.norm(dim=1), torch.ones(2))


def toy_nearest_l2(z: torch.Tensor, codes: torch.Tensor) -> int:
    return int(((codes - z.flatten()) ** 2).sum(1).argmin())


def test_cosine_loss_is_measured_between_unit_vectors():
    quantizer = CosineVectorQuantizer(codebook_size=2, dim=2, beta=0.25)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, -2.0]]))
    z = torch.tensor([[3.0, 4.0]]).view(1, 2, 1, 1)  # unit (0.6, 0.8) -> code 0 = (1, 0)
    out = quantizer(z)
    expected = 1.25 * ((torch.tensor([1.0, 0.0]) - torch.tensor([0.6, 0.8])) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()  # the codebook side reaches the raw weights through the normalisation
    assert quantizer.embedding.weight.grad[0].abs().sum() > 0
    assert not quantizer.embedding.weight.grad[1].any()


# ----------------------------------------------------------------------------- registry, config
def test_registry_builds_each_quantizer_from_its_table():
    vq = build("quantizer", {"type": "vq", "codebook_size": 8, "dim": 4, "beta_placement": "codebook"})
    assert isinstance(vq, VectorQuantizer) and (vq.codebook_weight, vq.commitment_weight) == (0.25, 1.0)
    ema = build("quantizer", {"type": "vq-ema", "codebook_size": 8, "dim": 4, "dead_code_threshold": 1.0})
    assert isinstance(ema, EMAVectorQuantizer) and ema.dead_code_threshold == 1.0
    cosine = build("quantizer", {"type": "cosine", "codebook_size": 8, "dim": 4})
    assert isinstance(cosine, CosineVectorQuantizer) and cosine.codebook.shape == (8, 4)


def test_vq_defaults_to_the_paper_commitment_placement():
    vq = build("quantizer", {"type": "vq"})
    assert (vq.codebook_size, vq.dim, vq.beta_placement) == (1024, 256, "commitment")
    assert (vq.codebook_weight, vq.commitment_weight) == (1.0, 0.25)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "vq", "beta_placement": "legacy"}, "$.beta_placement: must be one of"),
        ({"type": "vq", "codebook_size": 0}, "$.codebook_size: must be > 0"),
        ({"type": "vq-ema", "decay": 1.0}, "$.decay: must be in [0, 1)"),
        ({"type": "vq-ema", "dead_code_threshold": -1.0}, "$.dead_code_threshold: must be >= 0"),
        ({"type": "cosine", "dims": 4}, "did you mean 'dim'"),
    ],
)
def test_bad_quantizer_keys_are_config_errors_naming_the_key(table, message):
    with pytest.raises(ConfigError) as caught:
        build("quantizer", table)
    assert message in str(caught.value)


# -------------------------------------------------------------------------------- distributed
def _ema_rank(rank: int, world_size: int, init_file: str, latents: torch.Tensor, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        quantizer = toy_ema(decay=0.9, dead_code_threshold=0.0).train()
        quantizer(latents[rank : rank + 1])
        torch.save(quantizer.codebook, f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ema_statistics_are_summed_over_ranks_so_every_rank_keeps_the_same_codebook(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    latents = torch.rand(2, 2, 3, 3)  # one image per rank
    results = str(tmp_path / "codebook")
    mp.spawn(_ema_rank, args=(2, str(tmp_path / "init"), latents, results), nprocs=2, join=True)
    single = toy_ema(decay=0.9).train()
    single(latents)  # one process seeing both images
    for rank in range(2):
        torch.testing.assert_close(torch.load(f"{results}.{rank}"), single.codebook)


def test_split_squared_error_weights_each_side_like_the_quantizer_loss():
    z_q = TOY_CODES[TOY_NEAREST].clone().requires_grad_(True)
    z = TOY_LATENT_ROWS.clone().requires_grad_(True)
    loss = split_squared_error(z_q, z, (z_q - z).detach(), codebook_weight=0.25, commitment_weight=1.0)
    reference = 0.25 * ((z_q - z.detach()) ** 2).mean() + ((z_q.detach() - z) ** 2).mean()
    torch.testing.assert_close(loss, reference)
    loss.backward()
    expected_codes, expected_latents = torch.autograd.grad(reference, (z_q, z))
    torch.testing.assert_close(z_q.grad, expected_codes)
    torch.testing.assert_close(z.grad, expected_latents)


def test_the_nearest_code_of_a_tie_is_the_first_as_argmin_gives():
    """min(dim) replaced argmin for speed: on equal distances it must still pick the lowest index."""
    from lgvq_core.quantizers.lookup import nearest_codes

    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # codes 0 = 2, 1 = 3
    flat = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.5, 0.5], [1.0, 0.0]])  # the third is equidistant to all
    assert nearest_codes(flat, codebook).tolist() == [0, 1, 0, 0]
    scores = torch.randn(64, 512)
    scores[:, 100] = scores[:, 300] = scores.min() - 1  # a tie at the minimum in every row
    assert torch.equal(scores.min(dim=1).indices, scores.argmin(dim=1))
    assert set(scores.min(dim=1).indices.tolist()) == {100}


def test_the_straight_through_node_equals_autograd_on_the_plain_formula():
    """quant, loss and both gradients of the fused node against the VQ formula written out for autograd."""
    from lgvq_core.quantizers.lookup import flatten_latents, nearest_codes, quantize_straight_through

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 6, 3, 5, generator=generator)
    codebook = torch.randn(10, 6, generator=generator)
    upstream = torch.randn(2, 6, 3, 5, generator=generator)
    indices = nearest_codes(flatten_latents(z), codebook)

    z1, c1 = z.clone().requires_grad_(True), codebook.clone().requires_grad_(True)
    quant, loss = quantize_straight_through(z1, c1, flatten_latents(z1.detach()), indices, 1.0, 0.25)
    torch.autograd.backward((quant, loss), (upstream, None))

    z2, c2 = z.clone().requires_grad_(True), codebook.clone().requires_grad_(True)
    codes = c2[indices].view(2, 3, 5, 6).permute(0, 3, 1, 2)
    plain_quant = z2 + (codes - z2).detach()
    plain_loss = ((codes - z2.detach()) ** 2).mean() + 0.25 * ((codes.detach() - z2) ** 2).mean()
    torch.autograd.backward((plain_quant, plain_loss), (upstream, None))

    torch.testing.assert_close(quant, plain_quant)
    torch.testing.assert_close(loss, plain_loss)
    torch.testing.assert_close(z1.grad, z2.grad)
    torch.testing.assert_close(c1.grad, c2.grad)
