"""Levers against codebook collapse of the built-in quantizers: k-means init, dead-code restarts, factorised codes.

docs/method.md: Quantizers and β placement. Every lever is off by default and then changes nothing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lgvq_core.errors import ConfigError
from lgvq_core.quantizers.cosine import CosineVectorQuantizer
from lgvq_core.quantizers.ema import EMAVectorQuantizer
from lgvq_core.quantizers.kmeans import kmeans
from lgvq_core.quantizers.lookup import flatten_latents, nearest_codes, quantize_straight_through
from lgvq_core.quantizers.vq import VectorQuantizer
from lgvq_core.registry import build

QUANTIZERS = {"vq": VectorQuantizer, "cosine": CosineVectorQuantizer}


def as_map(rows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(b h w) d`` rows -> B×d×h×w latents."""
    return rows.view(-1, height, width, rows.shape[1]).permute(0, 3, 1, 2).contiguous()


def rows_of(z: torch.Tensor) -> torch.Tensor:
    return z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])


# Three well-separated clusters in 2-D, four latents each, rows ordered by cluster.
CLUSTER_MEANS = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
OFFSETS = torch.tensor([[0.1, 0.0], [-0.1, 0.0], [0.0, 0.2], [0.0, -0.2]])  # each set sums to zero
CLUSTER_ROWS = (CLUSTER_MEANS[:, None] + OFFSETS[None]).reshape(12, 2)


def seed_whose_draw_hits_every_cluster() -> int:
    """A seed whose K = 3 start rows (torch.randperm without replacement) lie in three different clusters."""
    for seed in range(100):
        torch.manual_seed(seed)
        if set((torch.randperm(12)[:3] // 4).tolist()) == {0, 1, 2}:
            return seed
    raise AssertionError("no seed in range(100) draws one start row per cluster")


# ------------------------------------------------------------------------------------ k-means
@pytest.mark.parametrize("kind", ["vq", "cosine"])
def test_kmeans_init_puts_one_code_on_each_cluster_mean(kind):
    quantizer = QUANTIZERS[kind](codebook_size=3, dim=2, init="kmeans", kmeans_iters=5).train()
    torch.manual_seed(seed_whose_draw_hits_every_cluster())
    out = quantizer(as_map(CLUSTER_ROWS, 3, 4))
    if kind == "vq":
        expected = CLUSTER_MEANS
    else:  # on the sphere: the normalised mean of the cluster's unit vectors
        expected = F.normalize(F.normalize(CLUSTER_ROWS, dim=1).view(3, 4, 2).mean(1), dim=1)
    order = [int(nearest_codes(mean[None], quantizer.codebook.detach())) for mean in expected]
    assert sorted(order) == [0, 1, 2]  # one code per cluster
    torch.testing.assert_close(quantizer.codebook.detach()[order], expected)
    # the forward already looked up against the new codebook: every latent picks its cluster's code
    assert out.indices.flatten().tolist() == [order[row // 4] for row in range(12)]
    assert bool(quantizer.initialized)


def lloyd_by_hand(rows: torch.Tensor, start: torch.Tensor, iterations: int, spherical: bool):
    """Lloyd's algorithm written out row by row (the specification of the vectorised one)."""
    centres = rows[start].clone()
    sizes = [0] * len(centres)
    for _ in range(iterations):
        members: list[list[torch.Tensor]] = [[] for _ in centres]
        for row in rows:
            distances = [float(((row - centre) ** 2).sum()) for centre in centres]
            members[distances.index(min(distances))].append(row)
        sizes = [len(group) for group in members]
        for k, group in enumerate(members):
            if group:  # an empty cluster keeps its centre
                mean = torch.stack(group).mean(0)
                centres[k] = F.normalize(mean, dim=0) if spherical else mean
    return centres, torch.tensor(sizes, dtype=rows.dtype)


@pytest.mark.parametrize("spherical", [False, True])
def test_kmeans_with_at_least_k_latents_is_lloyd_from_k_rows_drawn_without_replacement(spherical):
    torch.manual_seed(5)
    rows = torch.randn(40, 3)
    if spherical:
        rows = F.normalize(rows, dim=1)
    torch.manual_seed(1)
    start = torch.randperm(40)[:6]
    torch.manual_seed(1)
    centres, sizes = kmeans(rows, 6, iterations=4, spherical=spherical)
    expected_centres, expected_sizes = lloyd_by_hand(rows, start, 4, spherical)
    torch.testing.assert_close(centres, expected_centres)
    torch.testing.assert_close(sizes, expected_sizes)
    assert sizes.sum() == 40


def test_kmeans_with_fewer_latents_than_codes_draws_start_rows_with_replacement():
    rows = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    torch.manual_seed(2)
    start = torch.randint(4, (6,))
    torch.manual_seed(2)
    centres, sizes = kmeans(rows, 6, iterations=3)
    expected_centres, expected_sizes = lloyd_by_hand(rows, start, 3, spherical=False)
    # codes that start on the same row are interchangeable: compare (centre, size) pairs as multisets
    assert sorted(torch.cat([centres, sizes[:, None]], 1).tolist()) == sorted(
        torch.cat([expected_centres, expected_sizes[:, None]], 1).tolist()
    )
    assert len({tuple(row) for row in centres.tolist()}) < 6  # some rows were drawn twice


def test_kmeans_init_happens_once():
    quantizer = VectorQuantizer(codebook_size=3, dim=2, init="kmeans").train()
    quantizer(as_map(CLUSTER_ROWS, 3, 4))
    after_first = quantizer.codebook.detach().clone()
    quantizer(torch.randn(2, 2, 3, 3) * 10)  # a different batch: no optimiser step, so no change at all
    assert torch.equal(quantizer.codebook.detach(), after_first)


def test_kmeans_init_never_runs_in_eval_mode():
    quantizer = VectorQuantizer(codebook_size=3, dim=2, init="kmeans").eval()
    before = quantizer.codebook.detach().clone()
    quantizer(as_map(CLUSTER_ROWS, 3, 4))
    assert torch.equal(quantizer.codebook.detach(), before)
    assert not bool(quantizer.initialized)
    quantizer.train()(as_map(CLUSTER_ROWS, 3, 4))  # the first training forward does it
    assert bool(quantizer.initialized) and not torch.equal(quantizer.codebook.detach(), before)


class Holder(nn.Module):
    """A model that holds the quantizer (load hooks must reach a nested module)."""

    def __init__(self, quantizer: nn.Module) -> None:
        super().__init__()
        self.quantizer = quantizer


@pytest.mark.parametrize("kind", ["vq", "cosine", "vq-ema"])
def test_initialized_flag_survives_a_state_dict_round_trip_and_a_reloaded_model_keeps_its_codebook(kind):
    def make() -> nn.Module:
        if kind == "vq-ema":
            return EMAVectorQuantizer(codebook_size=3, dim=2, init="kmeans")
        return QUANTIZERS[kind](codebook_size=3, dim=2, init="kmeans")

    trained = Holder(make()).train()
    trained.quantizer(as_map(CLUSTER_ROWS, 3, 4))
    state = {name: value.clone() for name, value in trained.state_dict().items()}
    assert state["quantizer.initialized"].dtype == torch.bool and bool(state["quantizer.initialized"])

    resumed = Holder(make()).train()
    resumed.load_state_dict(state)
    assert bool(resumed.quantizer.initialized)
    torch.testing.assert_close(resumed.quantizer.codebook, trained.quantizer.codebook)
    # k-means on this batch would turn every code towards (30, 30); a reloaded model does not redo it,
    # it carries on exactly like the model that was saved
    far_batch = torch.randn(1, 2, 3, 4) + 30.0
    trained.quantizer(far_batch)
    resumed.quantizer(far_batch)
    assert torch.equal(resumed.quantizer.codebook.detach(), trained.quantizer.codebook.detach())
    diagonal = torch.tensor([0.5, 0.5]).sqrt()
    assert (F.normalize(resumed.quantizer.codebook.detach(), dim=1) @ diagonal).min() < 0.98

    # loading an uninitialised state makes the next training forward initialise again
    resumed.load_state_dict({name: value.clone() for name, value in Holder(make()).state_dict().items()})
    assert not bool(resumed.quantizer.initialized)
    resumed.quantizer(far_batch)
    assert bool(resumed.quantizer.initialized)
    assert (F.normalize(resumed.quantizer.codebook.detach(), dim=1) @ diagonal).min() > 0.98


def test_uniform_init_is_todays_codebook_for_a_seed():
    torch.manual_seed(7)
    reference = nn.Embedding(16, 4)
    nn.init.uniform_(reference.weight, -1.0 / 16, 1.0 / 16)
    torch.manual_seed(7)
    ema_reference = torch.empty(16, 4).uniform_(-1.0 / 16, 1.0 / 16)
    for kind, cls in [("vq", VectorQuantizer), ("cosine", CosineVectorQuantizer)]:
        torch.manual_seed(7)
        quantizer = build("quantizer", {"type": kind, "codebook_size": 16, "dim": 4})
        assert quantizer.init == "uniform" and isinstance(quantizer, cls)
        assert torch.equal(quantizer.embedding.weight, reference.weight)
        assert list(quantizer.state_dict()) == ["embedding.weight"]
    torch.manual_seed(7)
    ema = build("quantizer", {"type": "vq-ema", "codebook_size": 16, "dim": 4})
    assert torch.equal(ema.embedding, ema_reference)
    assert list(ema.state_dict()) == ["embedding", "ema_count", "ema_sum", "ema_steps"]


def test_ema_after_kmeans_the_clustering_is_the_first_step_and_the_next_step_follows_the_formula():
    decay, epsilon = 0.9, 1e-3
    quantizer = EMAVectorQuantizer(codebook_size=3, dim=2, decay=decay, epsilon=epsilon, init="kmeans").train()
    torch.manual_seed(seed_whose_draw_hits_every_cluster())
    out = quantizer(as_map(CLUSTER_ROWS, 3, 4))
    order = out.indices.flatten()[::4]  # the code of each cluster
    assert sorted(order.tolist()) == [0, 1, 2]
    # k-means: debiased count = cluster size 4, sum = 4 · mean, as a first step (hidden = (1 - decay) · value)
    kmeans_count = torch.zeros(3).index_fill_(0, order, 4.0)
    kmeans_sum = torch.zeros(3, 2).index_copy_(0, order, 4.0 * CLUSTER_MEANS)
    # the same forward's update is the second step, from this batch's assignment (every cluster to its code)
    batch_count = torch.bincount(out.indices.flatten(), minlength=3).float()
    batch_sum = torch.zeros(3, 2).index_add_(0, out.indices.flatten(), CLUSTER_ROWS)
    hidden_count = decay * (1 - decay) * kmeans_count + (1 - decay) * batch_count
    hidden_sum = decay * (1 - decay) * kmeans_sum + (1 - decay) * batch_sum
    assert quantizer.ema_steps.item() == 2
    torch.testing.assert_close(quantizer.ema_count, hidden_count)
    torch.testing.assert_close(quantizer.ema_sum, hidden_sum)
    debias = 1 - decay**2
    count = hidden_count / debias
    smoothed = (count + epsilon) / (count.sum() + 3 * epsilon) * count.sum()
    torch.testing.assert_close(quantizer.codebook, hidden_sum / debias / smoothed[:, None])


def test_kmeans_with_lookup_dim_clusters_the_projected_latents():
    quantizer = VectorQuantizer(codebook_size=3, dim=4, init="kmeans", lookup_dim=2).train()
    with torch.no_grad():  # lookup space = the first two channels, shifted by (1, -1)
        quantizer.project_in.weight.copy_(torch.eye(2, 4)[:, :, None, None])
        quantizer.project_in.bias.copy_(torch.tensor([1.0, -1.0]))
    latents = torch.cat([CLUSTER_ROWS, torch.randn(12, 2) * 0.01], dim=1)  # two more channels of noise
    torch.manual_seed(seed_whose_draw_hits_every_cluster())
    quantizer(as_map(latents, 3, 4))
    codes = quantizer.embedding.weight.detach()  # K×d
    expected = CLUSTER_MEANS + torch.tensor([1.0, -1.0])
    order = [int(nearest_codes(mean[None], codes)) for mean in expected]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(codes[order], expected)


# ---------------------------------------------------------------------------- dead-code restarts
RESTART_CODES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def restart_vq(threshold: float, decay: float) -> VectorQuantizer:
    quantizer = VectorQuantizer(codebook_size=3, dim=2, dead_code_threshold=threshold, usage_decay=decay).train()
    with torch.no_grad():
        quantizer.embedding.weight.copy_(RESTART_CODES)
    return quantizer


def test_restart_moves_a_code_once_its_ema_count_falls_below_the_threshold_and_leaves_used_codes():
    # decay 0.5; code 2 picked once at step 1, then never. Its debiased usage:
    #   step 1: 1; step 2: 0.5·0.5·1 / (1 - 0.25) = 1/3; step 3: 0.25·0.5·1 / (1 - 0.125) = 1/7 < 0.2
    quantizer = restart_vq(threshold=0.2, decay=0.5)
    first = torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.1, 0.9], [1.0, 0.1]])  # codes 0, 1, 2, 1
    later = torch.tensor([[0.1, 0.1], [0.9, 0.0], [0.2, 0.1], [0.8, 0.2]])  # codes 0, 1, 0, 1
    quantizer(as_map(first, 2, 2))
    quantizer(as_map(later, 2, 2))
    assert torch.equal(quantizer.codebook.detach(), RESTART_CODES)  # 1/3 >= 0.2: nothing moves
    torch.testing.assert_close(quantizer.restarts.usage_count[2] / 0.75, torch.tensor(1 / 3))
    quantizer(as_map(later, 2, 2))
    restarted = quantizer.codebook.detach()[2]
    assert any(torch.equal(restarted, row) for row in later)
    assert torch.equal(quantizer.codebook.detach()[:2], RESTART_CODES[:2])  # used codes stay
    debias = 1 - 0.5**3
    torch.testing.assert_close(quantizer.restarts.usage_count[2] / debias, torch.tensor(0.2))
    assert quantizer.restarts.usage_steps.item() == 3


def test_restarts_are_off_by_default():
    quantizer = VectorQuantizer(codebook_size=3, dim=2).train()
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]]))
    quantizer(as_map(torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.2, 0.1], [1.0, 0.1]]), 2, 2))
    assert torch.equal(quantizer.codebook.detach()[2], torch.tensor([50.0, 50.0]))
    assert quantizer.restarts is None and "restarts.usage_count" not in quantizer.state_dict()


def test_restarts_happen_only_in_training_mode():
    quantizer = restart_vq(threshold=0.5, decay=0.9).eval()
    quantizer(as_map(torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.2, 0.1], [1.0, 0.1]]), 2, 2))  # code 2 unused
    assert torch.equal(quantizer.codebook.detach(), RESTART_CODES)
    assert quantizer.restarts.usage_steps.item() == 0


def test_cosine_restart_stores_a_normalised_latent_and_the_step_still_backpropagates():
    quantizer = CosineVectorQuantizer(codebook_size=3, dim=2, dead_code_threshold=0.5).train()
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    rows = torch.tensor([[3.0, 4.0], [4.0, 3.0], [2.0, 0.1], [0.1, 2.0]])  # nobody points to (-1, -1)
    z = as_map(rows, 2, 2).requires_grad_(True)
    out = quantizer(z)
    restarted = quantizer.embedding.weight.detach()[2]
    assert any(torch.equal(restarted, row) for row in F.normalize(rows, dim=1))
    # the graph kept the codebook it looked up with, so backward runs and gives the codebook a gradient
    (out.loss + out.quant.sum()).backward()
    assert z.grad is not None and quantizer.embedding.weight.grad[:2].abs().sum() > 0


def test_restart_with_lookup_dim_moves_the_code_onto_a_projected_latent():
    quantizer = VectorQuantizer(codebook_size=4, dim=3, dead_code_threshold=0.5, lookup_dim=2).train()
    with torch.no_grad():
        quantizer.embedding.weight[3] = 100.0  # far from every projected latent
    z = torch.randn(1, 3, 2, 2)
    quantizer(z)
    with torch.no_grad():
        projected = rows_of(quantizer.project_in(z))  # (b h w) d
    assert any(torch.equal(quantizer.embedding.weight.detach()[3], row) for row in projected)


# ------------------------------------------------------------------------------ factorised codes
def factorised(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    quantizer = QUANTIZERS[kind](codebook_size=12, dim=6, lookup_dim=3)
    with torch.no_grad():
        quantizer.embedding.weight.normal_()
    return quantizer


@pytest.mark.parametrize("kind", ["vq", "cosine"])
def test_factorised_lookup_is_the_brute_force_nearest_code_of_the_projected_latents(kind):
    quantizer = factorised(kind)
    z = torch.randn(2, 6, 3, 4)
    out = quantizer(z)
    with torch.no_grad():
        projected = rows_of(quantizer.project_in(z))  # (b h w) 3
        codes = quantizer.embedding.weight  # 12×3
        if kind == "cosine":
            projected, codes = F.normalize(projected, dim=1), F.normalize(codes, dim=1)
        brute = ((projected[:, None, :] - codes[None]) ** 2).sum(-1)  # n k (test only)
    assert out.indices.flatten().tolist() == brute.argmin(1).tolist()
    assert out.quant.shape == (2, 6, 3, 4)
    # quant is the back-projection of the chosen lookup-space codes
    chosen = codes[brute.argmin(1)]
    expected = F.linear(chosen, quantizer.project_out.weight.flatten(1), quantizer.project_out.bias)
    torch.testing.assert_close(rows_of(out.quant), expected)
    # the loss is measured in the lookup space
    beta = quantizer.beta
    torch.testing.assert_close(out.loss, (1 + beta) * ((chosen - projected) ** 2).mean())


@pytest.mark.parametrize("kind", ["vq", "cosine"])
def test_factorised_codebook_rows_are_the_back_projected_codes_that_decode_indices_places(kind):
    quantizer = factorised(kind)
    codes = quantizer.embedding.weight.detach()
    if kind == "cosine":
        codes = F.normalize(codes, dim=1)
    weight, bias = quantizer.project_out.weight.detach()[:, :, 0, 0], quantizer.project_out.bias.detach()
    expected = codes @ weight.t() + bias  # k D
    assert quantizer.codebook.shape == (12, 6)
    torch.testing.assert_close(quantizer.codebook, expected)
    z = torch.randn(2, 6, 3, 4)
    out = quantizer.eval()(z)
    torch.testing.assert_close(quantizer.decode_indices(out.indices), out.quant, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["vq", "cosine"])
def test_factorised_gradients_reach_both_projections_the_codebook_and_the_latents(kind):
    quantizer = factorised(kind, seed=3)
    z = torch.randn(2, 6, 3, 4, requires_grad=True)
    upstream = torch.randn(2, 6, 3, 4)
    out = quantizer(z)
    (out.loss + (out.quant * upstream).sum()).backward()
    # the same computation written with plain autograd: project, lookup, straight-through, project back
    reference_z = z.detach().clone().requires_grad_(True)
    projection_in = quantizer.project_in.weight.detach().clone().requires_grad_(True)
    projection_out = quantizer.project_out.weight.detach().clone().requires_grad_(True)
    weight = quantizer.embedding.weight.detach().clone().requires_grad_(True)
    latents = F.conv2d(reference_z, projection_in, quantizer.project_in.bias.detach())
    codes = weight
    if kind == "cosine":
        latents, codes = F.normalize(latents, dim=1), F.normalize(weight, dim=1)
    chosen = codes[out.indices].permute(0, 3, 1, 2)  # b d h w
    quant = F.conv2d(latents + (chosen - latents).detach(), projection_out, quantizer.project_out.bias.detach())
    loss = ((chosen - latents.detach()) ** 2).mean() + quantizer.beta * ((chosen.detach() - latents) ** 2).mean()
    (loss + (quant * upstream).sum()).backward()
    for got, want in [
        (z.grad, reference_z.grad),
        (quantizer.project_in.weight.grad, projection_in.grad),
        (quantizer.project_out.weight.grad, projection_out.grad),
        (quantizer.embedding.weight.grad, weight.grad),
    ]:
        assert got is not None and got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_lookup_dim_of_the_code_width_keeps_d_channels_and_a_learned_projection():
    quantizer = VectorQuantizer(codebook_size=8, dim=4, lookup_dim=4)
    assert quantizer.embedding.weight.shape == (8, 4) and quantizer.project_in is not None
    with pytest.raises(ValueError, match=r"lookup_dim must be in \[1, dim\] = \[1, 4\]"):
        VectorQuantizer(codebook_size=8, dim=4, lookup_dim=5)


@pytest.mark.parametrize("kind", ["vq", "cosine"])
def test_unset_levers_run_exactly_the_plain_lookup(kind):
    """No option set: the forward is the plain lookup of lookup.py, bit for bit, values and gradients."""
    torch.manual_seed(11)
    quantizer = QUANTIZERS[kind](codebook_size=32, dim=5, beta_placement="codebook").train()
    assert sorted(quantizer.state_dict()) == ["embedding.weight"]
    assert quantizer.project_in is None and quantizer.restarts is None and quantizer.init == "uniform"
    z = torch.randn(2, 5, 3, 3, requires_grad=True)
    out = quantizer(z)
    (out.loss + out.quant.pow(2).sum()).backward()

    reference_weight = quantizer.embedding.weight.detach().clone().requires_grad_(True)
    reference_z = z.detach().clone().requires_grad_(True)
    codebook, latents = reference_weight, reference_z
    if kind == "cosine":
        codebook, latents = F.normalize(codebook, dim=1), F.normalize(latents, dim=1)
    flat = flatten_latents(latents).detach()
    indices = nearest_codes(flat, codebook)
    quant, loss = quantize_straight_through(latents, codebook, flat, indices, 0.25, 1.0)
    (loss + quant.pow(2).sum()).backward()
    assert torch.equal(out.indices.flatten(), indices)
    assert torch.equal(out.quant, quant) and torch.equal(out.loss, loss)
    assert torch.equal(z.grad, reference_z.grad)
    assert torch.equal(quantizer.embedding.weight.grad, reference_weight.grad)


# ----------------------------------------------------------------------------- registry, config
def test_registry_passes_every_lever_to_the_quantizer():
    vq = build(
        "quantizer",
        {
            "type": "vq",
            "codebook_size": 8,
            "dim": 4,
            "init": "kmeans",
            "kmeans_iters": 3,
            "dead_code_threshold": 0.5,
            "usage_decay": 0.9,
            "lookup_dim": 2,
        },
    )
    assert (vq.init, vq.kmeans_iters, vq.lookup_dim) == ("kmeans", 3, 2)
    assert (vq.restarts.threshold, vq.restarts.decay) == (0.5, 0.9)
    assert vq.embedding.weight.shape == (8, 2) and vq.codebook.shape == (8, 4)
    cosine = build("quantizer", {"type": "cosine", "codebook_size": 8, "dim": 4, "lookup_dim": 4})
    assert isinstance(cosine, CosineVectorQuantizer) and cosine.project_out is not None
    ema = build("quantizer", {"type": "vq-ema", "codebook_size": 8, "dim": 4, "init": "kmeans", "kmeans_iters": 2})
    assert (ema.init, ema.kmeans_iters) == ("kmeans", 2)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "vq", "init": "random"}, '$.init: must be one of "uniform", "kmeans"'),
        ({"type": "vq-ema", "init": "kmeans++"}, "$.init: must be one of"),
        ({"type": "cosine", "kmeans_iters": 0}, "$.kmeans_iters: must be > 0"),
        ({"type": "vq", "dead_code_threshold": -0.5}, "$.dead_code_threshold: must be >= 0"),
        ({"type": "cosine", "usage_decay": 1.0}, "$.usage_decay: must be in [0, 1)"),
        ({"type": "vq", "usage_decay": -0.1}, "$.usage_decay: must be in [0, 1)"),
        ({"type": "vq", "lookup_dim": 0}, "$.lookup_dim: must be in [1, dim] = [1, 256]"),
        ({"type": "cosine", "dim": 8, "lookup_dim": 16}, "$.lookup_dim: must be in [1, dim] = [1, 8]"),
        ({"type": "vq-ema", "lookup_dim": 4}, "$.lookup_dim: unknown key 'lookup_dim'"),
    ],
)
def test_bad_lever_keys_are_config_errors_naming_the_key(table, message):
    with pytest.raises(ConfigError) as caught:
        build("quantizer", table)
    assert message in str(caught.value)


# -------------------------------------------------------------------------------- distributed
# Rank 0 picks codes 0-3; rank 1 never picks code 3 (nor the far code 2).
RANK_CODES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0], [0.0, 1.0]])
RANK_ROWS = [
    torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.1, 0.9], [0.8, 0.0]]),
    torch.tensor([[0.0, 0.1], [1.0, 0.1], [0.2, 0.0], [0.9, 0.2]]),
]


def _levers_rank(rank: int, world_size: int, init_file: str, latents: torch.Tensor, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # every rank seeded alike, as the runner does; the batches differ
        kmeans_vq = VectorQuantizer(codebook_size=4, dim=2, init="kmeans").train()
        kmeans_vq(latents[rank : rank + 1])
        restarting = VectorQuantizer(codebook_size=4, dim=2, dead_code_threshold=0.5).train()
        with torch.no_grad():
            restarting.embedding.weight.copy_(RANK_CODES)
        torch.manual_seed(100 + rank)  # different streams: the draws must still agree
        restarting(as_map(RANK_ROWS[rank], 2, 2))
        ema = EMAVectorQuantizer(codebook_size=4, dim=2, init="kmeans", dead_code_threshold=0.5).train()
        ema(latents[rank : rank + 1])
        torch.save(
            {
                "kmeans": kmeans_vq.codebook.detach(),
                "restarts": restarting.codebook.detach(),
                "usage": restarting.restarts.usage_count,
                "ema": ema.codebook,
                "ema_count": ema.ema_count,
            },
            f"{results}.{rank}",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_under_two_processes_every_rank_keeps_the_same_codebook(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    latents = torch.randn(2, 2, 3, 3)  # one image per rank
    results = str(tmp_path / "codebooks")
    mp.spawn(_levers_rank, args=(2, str(tmp_path / "init"), latents, results), nprocs=2, join=True)
    ranks = [torch.load(f"{results}.{rank}") for rank in range(2)]
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    # k-means: both ranks hold rank 0's clustering of its own batch
    torch.manual_seed(0)
    single = VectorQuantizer(codebook_size=4, dim=2, init="kmeans").train()
    single(latents[:1])
    assert torch.equal(ranks[1]["kmeans"], single.codebook.detach())
    # restarts: counts are summed over ranks, so code 3 (picked on rank 0 only) stays on both ranks,
    # and the far code 2 moves onto a latent of rank 0's batch on both
    restarted = ranks[1]["restarts"]
    assert torch.equal(restarted[3], RANK_CODES[3])
    assert any(torch.equal(restarted[2], row) for row in RANK_ROWS[0])
    # usage after one step = the batch counts summed over ranks: (1, 2, 0, 1) + (2, 2, 0, 0)
    torch.testing.assert_close(ranks[1]["usage"][[0, 1, 3]] / 0.01, torch.tensor([3.0, 4.0, 1.0]))
