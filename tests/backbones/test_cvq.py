"""cvq (docs/method.md: CVQ): similarity, usage EMA, online re-initialisation, anchors, contrastive term, backbone."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.nn.functional as F

from lgvq_backbones.cvq.config import CVQConfig
from lgvq_backbones.cvq.quantizer import (
    CVQQuantizer,
    FeaturePool,
    build_cvq_quantizer,
    contrastive_loss,
    reinit_rate,
    similarity,
)


def _latents(points: list[list[float]]) -> torch.Tensor:
    """Points (n×D) as a 1×D×1×n latent map, so position j of the flattened batch is point j."""
    return torch.tensor(points).t().unsqueeze(0).unsqueeze(2).contiguous()


def _quantizer(codes: list[list[float]], **options) -> CVQQuantizer:
    quantizer = CVQQuantizer(len(codes), len(codes[0]), **options)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor(codes))
    return quantizer


# -- similarity and assignment ------------------------------------------------------------------
def test_l2_similarity_is_minus_the_squared_distance():
    z = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    e = torch.tensor([[1.0, 0.0], [3.0, 3.0], [0.0, 0.0]])
    expected = torch.tensor([[-4.0, -5.0, -5.0], [-2.0, -25.0, -1.0]])
    torch.testing.assert_close(similarity(z, e, "l2"), expected)


def test_cos_similarity_is_the_cosine():
    z = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    e = torch.tensor([[0.0, 5.0], [3.0, 3.0]])
    expected = torch.tensor([[0.0, math.sqrt(0.5)], [math.sqrt(0.5), 1.0]])
    torch.testing.assert_close(similarity(z, e, "cos"), expected)


@pytest.mark.parametrize("distance", ["l2", "cos"])
def test_each_position_takes_the_most_similar_code_and_quant_equals_it(distance):
    quantizer = _quantizer([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], distance=distance).eval()
    z = _latents([[0.9, 0.1], [-2.0, 0.3], [0.2, 3.0]])
    out = quantizer(z)
    assert out.indices.tolist() == [[[0, 2, 1]]]
    torch.testing.assert_close(out.quant, quantizer.decode_indices(out.indices))


# -- loss and gradients -------------------------------------------------------------------------
def test_loss_puts_beta_on_the_commitment_term_and_sends_each_term_to_its_side():
    quantizer = _quantizer([[1.0, 0.0], [0.0, 1.0]], contras_loss=False).eval()
    z = _latents([[0.5, 0.0], [0.0, 3.0]]).requires_grad_(True)
    out = quantizer(z)
    z_q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the codes of the two points
    flat = z.detach()[0, :, 0].t()
    mse = ((z_q - flat) ** 2).mean()
    assert out.loss.item() == pytest.approx(1.25 * mse.item())  # beta·commitment + codebook, equal values
    out.loss.backward()
    # d/dz of 0.25·mean((z - sg z_q)²); the straight-through output adds nothing here.
    torch.testing.assert_close(z.grad[0, :, 0].t(), 0.25 * 2 * (flat - z_q) / flat.numel())
    # d/de of mean((e - sg z)²): the full weight goes to the codebook.
    torch.testing.assert_close(quantizer.embedding.weight.grad, 2 * (z_q - flat) / flat.numel())


def test_codebook_placement_moves_beta_to_the_codebook_term():
    quantizer = _quantizer([[1.0, 0.0], [0.0, 1.0]], contras_loss=False, beta_placement="codebook").eval()
    z = _latents([[0.5, 0.0], [0.0, 3.0]]).requires_grad_(True)
    quantizer(z).loss.backward()
    flat, z_q = z.detach()[0, :, 0].t(), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(z.grad[0, :, 0].t(), 2 * (flat - z_q) / flat.numel())
    torch.testing.assert_close(quantizer.embedding.weight.grad, 0.25 * 2 * (z_q - flat) / flat.numel())


def test_contrastive_term_moves_only_the_codebook():
    torch.manual_seed(0)
    quantizer = CVQQuantizer(8, 4, contras_loss=True, anchor="closest")
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = quantizer(z)
    out.stats["contrastive_loss"]  # present in training mode
    out.loss.backward()
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    # z's gradient is the commitment term's alone.
    z_q = out.quant.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    expected = 0.25 * 2 * (flat - z_q) / flat.numel()
    torch.testing.assert_close(z.grad.permute(0, 2, 3, 1).reshape(-1, 4), expected)


# -- contrastive loss by hand ---------------------------------------------------------------------
def test_contrastive_loss_matches_a_hand_computation():
    # n = 4 positions, K = 2 codes: one positive = mean of the top max(1, 4 // 2) = 2 values,
    # negatives = the 4 // 2 = 2 smallest values, logits / 0.07, target 0.
    d = torch.tensor([[0.9, -0.5], [0.5, 0.1], [-0.2, 0.4], [-0.8, 0.3]])
    code0 = torch.tensor([(0.9 + 0.5) / 2, -0.8, -0.2]) / 0.07
    code1 = torch.tensor([(0.4 + 0.3) / 2, -0.5, 0.1]) / 0.07
    expected = 0.5 * (-(code0.log_softmax(0)[0]) - code1.log_softmax(0)[0])
    assert contrastive_loss(d, 2).item() == pytest.approx(expected.item(), rel=1e-6)


def test_contrastive_loss_uses_one_positive_when_codes_outnumber_positions():
    d = torch.tensor([[0.2, 0.0, 1.0], [0.6, -1.0, 0.5]])  # n = 2 < K = 3: top-1, one negative
    logits = torch.tensor([[0.6, 0.2], [0.0, -1.0], [1.0, 0.5]]) / 0.07
    expected = F.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    assert contrastive_loss(d, 3).item() == pytest.approx(expected.item(), rel=1e-6)


# -- usage EMA and the re-initialisation rate -------------------------------------------------------
def test_reinit_rate_matches_the_formula():
    usage = torch.tensor([0.0, 0.001, 0.5])
    rate = reinit_rate(usage, 0.99)
    # a_k = exp(-p_k·K·10/(1-γ) - 1e-3) with K = 3, γ = 0.99
    expected = [math.exp(-1e-3), math.exp(-0.001 * 3 * 10 / 0.01 - 1e-3), math.exp(-0.5 * 3 * 10 / 0.01 - 1e-3)]
    assert rate.tolist() == pytest.approx(expected, rel=1e-6)


def test_usage_ema_starts_at_zero_and_follows_the_batch_fractions():
    quantizer = _quantizer([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], contras_loss=False, first_batch=True)
    assert quantizer.code_usage.tolist() == [0.0] * 4
    quantizer.initialised.fill_(True)  # the one-shot re-initialisation is spent: codes stay put
    z = _latents([[1.0, 0.0], [0.9, 0.0], [1.1, 0.0], [0.0, 1.0]])  # fractions 3/4, 1/4, 0, 0
    quantizer(z)
    assert quantizer.code_usage.tolist() == pytest.approx([0.01 * 0.75, 0.01 * 0.25, 0.0, 0.0])
    quantizer(z)
    assert quantizer.code_usage.tolist() == pytest.approx([0.0199 * 0.75, 0.0199 * 0.25, 0.0, 0.0])


# -- re-initialisation --------------------------------------------------------------------------
def test_a_dead_code_moves_onto_the_data_and_used_codes_barely_move():
    codes = [[1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]
    quantizer = _quantizer(codes, anchor="closest", contras_loss=False)
    with torch.no_grad():  # codes 0 and 1 have been used: p = 1/2 each
        quantizer.code_usage.copy_(torch.tensor([0.5, 0.5, 0.0]))
    points = [[1.2, 0.1], [0.9, -0.1], [0.1, 1.1], [-0.1, 0.8]]
    quantizer(_latents(points))
    weight = quantizer.embedding.weight.detach()
    # The far code (never used) is replaced by the point closest to it, up to exp(-1e-3).
    rate = math.exp(-1e-3)
    torch.testing.assert_close(weight[2], (1 - rate) * torch.tensor(codes[2]) + rate * torch.tensor(points[0]))
    assert torch.linalg.norm(weight[2] - torch.tensor(points[0])) < 0.2
    # Used codes keep their place (a_k ~ exp(-1500)).
    torch.testing.assert_close(weight[:2], torch.tensor(codes[:2]))


def test_re_initialisation_happens_on_the_first_steps_for_every_code():
    # p_0 = 0: after one step even the used codes have p = 0.01·fraction, so a = exp(-p·K·1000) is
    # still sizeable for a rarely used one; a code used by every position keeps its place.
    quantizer = _quantizer([[0.0, 0.0], [5.0, 5.0]], anchor="closest", contras_loss=False)
    quantizer(_latents([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [-0.1, 0.0]]))
    weight = quantizer.embedding.weight.detach()
    assert torch.linalg.norm(weight[1] - torch.tensor([0.1, 0.1])) < 0.01  # dead code -> closest point
    torch.testing.assert_close(weight[0], torch.zeros(2), atol=1e-6, rtol=0)  # a = exp(-20)


def test_first_batch_re_initialises_only_once():
    quantizer = _quantizer(
        [[0.0, 0.0], [5.0, 5.0], [-5.0, -5.0]], anchor="closest", contras_loss=False, first_batch=True
    )
    quantizer(_latents([[0.1, 0.0], [1.0, 1.0]]))
    after_first = quantizer.embedding.weight.detach().clone()
    assert bool(quantizer.initialised)
    quantizer(_latents([[-3.0, -3.0], [3.0, 3.0]]))
    torch.testing.assert_close(quantizer.embedding.weight.detach(), after_first)


def test_eval_mode_leaves_codebook_usage_and_pool_alone():
    torch.manual_seed(0)
    quantizer = CVQQuantizer(8, 4, anchor="random")
    state = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.eval()
    out = quantizer(torch.randn(2, 4, 3, 3))
    for key, value in quantizer.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    assert "contrastive_loss" not in out.stats


def test_backward_still_works_after_the_in_place_re_initialisation():
    torch.manual_seed(0)
    for distance in ("l2", "cos"):
        quantizer = CVQQuantizer(8, 4, distance=distance)
        z = torch.randn(2, 4, 3, 3, requires_grad=True)
        out = quantizer(z)
        (out.loss + out.quant.sum()).backward()
        assert z.grad is not None and quantizer.embedding.weight.grad is not None


# -- anchors -------------------------------------------------------------------------------------
def test_closest_anchor_is_the_most_similar_latent_of_each_code():
    quantizer = CVQQuantizer(2, 2, anchor="closest")
    latents = torch.tensor([[0.0, 1.0], [2.0, 0.0], [5.0, 5.0]])
    d = similarity(latents, torch.tensor([[2.1, 0.1], [4.0, 4.0]]), "l2")
    torch.testing.assert_close(quantizer._anchors(d, latents), latents[[1, 2]])


def test_probrandom_anchor_samples_latents_with_softmax_probabilities():
    quantizer = CVQQuantizer(1, 1, anchor="probrandom")
    latents = torch.tensor([[10.0], [20.0]])
    d = torch.log(torch.tensor([[0.8], [0.2]]))  # softmax over positions = (0.8, 0.2), no temperature
    torch.manual_seed(0)
    draws = torch.cat([quantizer._anchors(d, latents) for _ in range(2000)])
    assert (draws == 10.0).float().mean().item() == pytest.approx(0.8, abs=0.03)
    assert set(draws.flatten().tolist()) == {10.0, 20.0}


def test_random_anchor_fills_the_feature_pool_then_overwrites_random_slots():
    torch.manual_seed(0)
    pool = FeaturePool(4, 2)
    first = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    out = pool.query(first)
    torch.testing.assert_close(out[:2], first)  # appended while filling
    assert int(pool.filled) == 2
    second = torch.tensor([[3.0, 3.0], [4.0, 4.0]])
    pool.query(second)
    torch.testing.assert_close(pool.features, torch.cat([first, second]))
    assert int(pool.filled) == 4
    third = torch.tensor([[9.0, 9.0]])
    out = pool.query(third)
    assert (out == 9.0).all(1).sum() == 1  # one random slot overwritten, the rest kept
    kept = out[~(out == 9.0).all(1)]
    assert all(any(torch.equal(row, old) for old in torch.cat([first, second])) for row in kept)


def test_a_batch_overflowing_the_free_space_fills_the_pool_and_overwrites_random_slots():
    """The official pool raises here (a 3-row batch assigned to a 1-row slice); lgvq keeps going."""
    torch.manual_seed(0)
    pool = FeaturePool(4, 1)
    pool.query(torch.tensor([[1.0], [2.0], [3.0]]))
    out = pool.query(torch.tensor([[7.0], [8.0], [9.0]]))
    assert int(pool.filled) == 4
    values = out.flatten().tolist()
    assert 8.0 in values and 9.0 in values  # the rest overwrites random slots (7 filled slot 3, maybe overwritten)
    assert sum(v in (1.0, 2.0, 3.0) for v in values) >= 2 and sum(v in (7.0, 8.0, 9.0) for v in values) >= 2


def test_random_anchor_pool_is_resampled_from_a_batch_larger_than_the_pool():
    torch.manual_seed(0)
    pool = FeaturePool(3, 1)
    batch = torch.arange(10.0).unsqueeze(1) + 100
    out = pool.query(batch)
    assert out.shape == (3, 1) and all(100 <= v < 110 for v in out.flatten().tolist())
    assert int(pool.filled) == 3


def test_random_anchor_mode_moves_dead_codes_onto_pool_rows():
    torch.manual_seed(0)
    quantizer = _quantizer([[0.0, 0.0], [50.0, 50.0]], anchor="random", contras_loss=False)
    points = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    quantizer(_latents(points))  # pool of 2 < batch of 3: resampled from the batch
    dead = quantizer.embedding.weight.detach()[1]
    assert min(torch.linalg.norm(dead - torch.tensor(p)).item() for p in points) < 0.1


# -- config, registry and backbone ---------------------------------------------------------------
def test_config_defaults_are_lg_vq_copy():
    config = CVQConfig()
    assert (config.distance, config.anchor, config.contras_loss) == ("l2", "probrandom", True)
    assert (config.codebook_size, config.dim, config.beta, config.decay) == (1024, 256, 0.25, 0.99)
    quantizer = build_cvq_quantizer(CVQConfig(codebook_size=16, dim=8))
    assert (quantizer.codebook_size, quantizer.dim, quantizer.codebook.shape) == (16, 8, (16, 8))


def test_quantizer_rejects_latents_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"B×8×h×w"):
        CVQQuantizer(4, 8)(torch.randn(1, 3, 2, 2))


# -- distributed --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    # A forked child must not enter the parent's OpenMP pool (it would hang): stay single-threaded.
    torch.set_num_threads(1)

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # same initial codebook on both ranks
        quantizer = CVQQuantizer(8, 2, anchor="probrandom")
        torch.manual_seed(100 + rank)  # different data and different sampling on each rank
        for _ in range(3):
            quantizer(torch.randn(2, 2, 2, 2) + rank * 3)
        out[rank] = (quantizer.embedding.weight.detach().clone(), quantizer.code_usage.clone())
    finally:
        dist.destroy_process_group()


def test_ranks_keep_identical_codebooks_under_torch_distributed():
    import torch.multiprocessing as mp

    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(_distributed_worker, args=(_free_port(), out), nprocs=2, join=True, start_method="fork")
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=0)


# -- the backbone ---------------------------------------------------------------------------------
TINY_VQGAN = {
    "ch": 8,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [8],
    "z_channels": 8,
    "norm_groups": 4,
}


@pytest.fixture
def plugin_manager_with_backbones(make_plugin_manager):
    return make_plugin_manager(["core", "testing", "backbones"])


def _run_file(**model):
    import copy

    from lgvq_core.testing.fixtures import TINY_RUN

    run = copy.deepcopy(TINY_RUN)
    run["model"] = model
    run["alignment"] = []
    return run


def test_cvq_backbone_defaults_to_the_cvq_quantizer_and_warns_about_another(plugin_manager_with_backbones):
    from lgvq_core.run_file import validate_run_file as validate

    loaded = validate(_run_file(backbone={"type": "cvq"}))
    assert loaded.config.model.quantizer.type == "cvq" and loaded.warnings == ()
    assert loaded.config.model.quantizer.config == CVQConfig()
    loaded = validate(_run_file(backbone={"type": "cvq"}, quantizer={"type": "vq"}))
    assert any('backbone "cvq" is VQ-GAN with the cvq quantizer' in p.message for p in loaded.warnings)


def test_cvq_quantizer_pairs_with_another_backbone(plugin_manager_with_backbones):
    from lgvq_core.registry import build

    quantizer = build("quantizer", {"type": "cvq", "codebook_size": 32, "dim": 16})
    assert isinstance(quantizer, CVQQuantizer)
    from lgvq_core.context import BuildContext

    model = build("backbone", {"type": "tiny-ae"}, "$.model.backbone", BuildContext(quantizer=quantizer))
    assert model(torch.rand(2, 3, 16, 16) * 2 - 1).quant.shape == (2, 16, 4, 4)


def test_cvq_backbone_trains_end_to_end_on_a_tiny_config(plugin_manager_with_backbones):
    from lgvq_core.context import BuildContext
    from lgvq_core.registry import build

    torch.manual_seed(0)
    context = BuildContext(image_size=16, log=lambda message: None)
    context.quantizer = build("quantizer", {"type": "cvq", "codebook_size": 32, "dim": 8}, "$.model.quantizer", context)
    model = build("backbone", {"type": "cvq", **TINY_VQGAN}, "$.model.backbone", context)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    before = model.quantizer.embedding.weight.detach().clone()
    out = model(images)
    assert out.quant.shape == (2, 8, 8, 8) and out.indices.shape == (2, 8, 8)
    model.generator_loss(images, out, step=0, discriminator=None)["total"].backward()
    assert model.quantizer.embedding.weight.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    # p_0 = 0: the first training step re-anchors (nearly) every code onto encoder features.
    assert not torch.allclose(model.quantizer.embedding.weight.detach(), before)
