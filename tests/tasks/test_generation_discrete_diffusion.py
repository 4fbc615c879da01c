"""Mask-and-replace diffusion maths: schedule, forward process, posterior, time sampling (hand-checked)."""

from __future__ import annotations

import pytest
import torch

from lgvq_tasks.generation.discrete_diffusion import (
    LOG_ZERO,
    MaskAndReplaceSchedule,
    TimeSampler,
    sampling_times,
)


def small_schedule() -> MaskAndReplaceSchedule:
    # K = 2 codes, T = 2: abar = (1, 0.9, 0.5), gbar = (0, 0.05, 0.3), bbar = (0, 0.025, 0.1)
    return MaskAndReplaceSchedule(2, steps=2, alpha_cumulative=(0.9, 0.5), gamma_cumulative=(0.05, 0.3))


def step_two_by_hand() -> tuple[float, float, float]:
    """alpha, beta, gamma of the single step 1 -> 2 of ``small_schedule``."""
    alpha = 0.5 / 0.9
    gamma = 1 - 0.7 / 0.95
    beta = (1 - alpha - gamma) / 2
    return alpha, beta, gamma


def posterior_by_hand(x0: int, x2: int) -> list[float]:
    """q(x1 | x2, x0) via Bayes from the hand-written one-step and cumulative probabilities."""
    alpha, beta, gamma = step_two_by_hand()
    q_x1_given_x0 = [0.925 if c == x0 else 0.025 for c in (0, 1)] + [0.05]
    if x2 == 2:  # [MASK]
        q_x2_given_x1 = [gamma, gamma, 1.0]
    else:
        q_x2_given_x1 = [alpha + beta if c == x2 else beta for c in (0, 1)] + [0.0]
    joint = [a * b for a, b in zip(q_x1_given_x0, q_x2_given_x1, strict=True)]
    return [j / sum(joint) for j in joint]


def test_schedule_endpoints_and_step_zero():
    schedule = MaskAndReplaceSchedule(1024)
    assert schedule.alpha_bar[0] == 1 and schedule.gamma_bar[0] == 0
    assert torch.isclose(schedule.alpha_bar[1], torch.tensor(0.99999, dtype=torch.float64))
    assert torch.isclose(schedule.alpha_bar[100], torch.tensor(9e-6, dtype=torch.float64))
    assert torch.isclose(schedule.gamma_bar[1], torch.tensor(9e-6, dtype=torch.float64))
    assert torch.isclose(schedule.gamma_bar[100], torch.tensor(0.99999, dtype=torch.float64))
    assert bool((schedule.beta_bar >= 0).all())


def test_forward_process_at_T_is_the_stationary_distribution():
    schedule = MaskAndReplaceSchedule(3, steps=100)
    x0 = torch.tensor([[0, 1, 2]])
    t = torch.tensor([100])
    probs = schedule.forward_probs(x0, torch.zeros_like(t), t)[0]  # 3 x C
    gamma_T = 0.99999
    assert torch.allclose(probs[:, 3], torch.full((3,), gamma_T, dtype=torch.float64))
    stationary = torch.tensor([(1 - gamma_T) / 3] * 3 + [gamma_T], dtype=torch.float64)
    assert (probs - stationary).abs().max() <= 9e-6  # what still depends on x0 is abar_T
    assert torch.allclose(probs.sum(-1), torch.ones(3, dtype=torch.float64))
    draws = schedule.sample_forward(torch.zeros(1, 20000, dtype=torch.long), t, torch.Generator().manual_seed(0))
    assert (draws == 3).float().mean() > 0.999
    middle = schedule.sample_forward(torch.zeros(1, 20000, dtype=torch.long), torch.tensor([50]), torch.Generator())
    expected = schedule.gamma_bar[50].item()
    assert abs((middle == 3).float().mean().item() - expected) < 0.015
    kept = (schedule.alpha_bar[50] + schedule.beta_bar[50]).item()
    assert abs((middle == 0).float().mean().item() - kept) < 0.015
    assert abs((middle == 1).float().mean().item() - schedule.beta_bar[50].item()) < 0.015


def test_one_step_transitions_compose_to_the_cumulative_transition():
    schedule = MaskAndReplaceSchedule(3, steps=20)
    states = torch.arange(4)[None]  # every state as x_s
    product = torch.eye(4, dtype=torch.float64)
    for step in range(1, 21):
        t = torch.tensor([step])
        product = product @ schedule.forward_probs(states, t - 1, t)[0]  # rows x_{t-1}, columns x_t
        cumulative = schedule.forward_probs(states, torch.tensor([0]), t)[0]
        assert torch.allclose(product, cumulative, atol=1e-12)
    skipped = schedule.forward_probs(states, torch.tensor([5]), torch.tensor([12]))[0]
    direct = schedule.forward_probs(states, torch.tensor([0]), torch.tensor([12]))[0]
    assert torch.allclose(schedule.forward_probs(states, torch.tensor([0]), torch.tensor([5]))[0] @ skipped, direct)


@pytest.mark.parametrize(("x0", "x2"), [(0, 1), (1, 1), (1, 2), (0, 0)])
def test_true_posterior_matches_the_hand_computed_case(x0, x2):
    schedule = small_schedule()
    one_hot = torch.full((1, 1, 2), LOG_ZERO)
    one_hot[0, 0, x0] = 0.0
    log_posterior = schedule.posterior_log_probs(one_hot.double(), torch.tensor([[x2]]), torch.tensor([2]))
    expected = torch.tensor(posterior_by_hand(x0, x2), dtype=torch.float64)
    assert torch.allclose(log_posterior.exp()[0, 0], expected, atol=1e-12)


def test_model_posterior_is_the_prediction_weighted_true_posterior():
    schedule = small_schedule()
    predicted = torch.tensor([0.3, 0.7], dtype=torch.float64)
    for x2 in (0, 1, 2):
        log_p = schedule.posterior_log_probs(predicted.log()[None, None], torch.tensor([[x2]]), torch.tensor([2]))
        mixture = [0.3 * a + 0.7 * b for a, b in zip(posterior_by_hand(0, x2), posterior_by_hand(1, x2), strict=True)]
        assert torch.allclose(log_p.exp()[0, 0], torch.tensor(mixture, dtype=torch.float64), atol=1e-12)
    # x2 = 1, by hand: 0.3 * (0.83845, 0.16155, 0) + 0.7 * (0.00378, 0.99622, 0)
    log_p = schedule.posterior_log_probs(predicted.log()[None, None], torch.tensor([[1]]), torch.tensor([2]))
    assert torch.allclose(log_p.exp()[0, 0], torch.tensor([0.25418, 0.74582, 0.0], dtype=torch.float64), atol=1e-4)


def test_posterior_at_t_one_is_the_prediction():
    schedule = MaskAndReplaceSchedule(3, steps=10)
    predicted = torch.tensor([[[0.2, 0.5, 0.3]]], dtype=torch.float64)
    for x1 in range(4):
        log_p = schedule.posterior_log_probs(predicted.log(), torch.tensor([[x1]]), torch.tensor([1]))
        assert torch.allclose(log_p.exp()[0, 0, :3], predicted[0, 0], atol=1e-12)


@pytest.mark.parametrize(("t", "s"), [(7, 6), (9, 4), (10, 1)])
def test_stepping_back_from_a_forward_sample_preserves_the_marginal(t, s):
    """sum over x_t of q(x_t | x0) q(x_s | x_t, x0) = q(x_s | x0), also when steps are skipped."""
    schedule = MaskAndReplaceSchedule(3, steps=10, alpha_cumulative=(0.95, 0.05), gamma_cumulative=(0.02, 0.9))
    x0 = 1
    one_hot = torch.full((1, 4, 3), LOG_ZERO, dtype=torch.float64)
    one_hot[..., x0] = 0.0
    tt, ss = torch.tensor([t]), torch.tensor([s])
    q_xt = schedule.forward_probs(torch.tensor([[x0]]), torch.tensor([0]), tt)[0, 0]  # C
    posterior = schedule.posterior_log_probs(one_hot, torch.arange(4)[None], tt, ss).exp()[0]  # x_t x C
    marginal = (q_xt[:, None] * posterior).sum(0)
    assert torch.allclose(marginal, schedule.forward_probs(torch.tensor([[x0]]), torch.tensor([0]), ss)[0, 0])


def test_time_sampler_is_uniform_then_follows_the_loss():
    sampler = TimeSampler(4, importance=True, warmup_count=1)
    assert torch.allclose(sampler.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    for _ in range(2):
        sampler.update(torch.tensor([1, 2, 3, 4]), torch.tensor([5.0, 1.0, 2.0, 4.0]))
    # E[L^2] after two updates: 0.19 L^2; weights sqrt(.) with t = 1 taking t = 2's: 1, 1, 2, 4 (x sqrt .19)
    assert torch.allclose(sampler.probabilities(), torch.tensor([1, 1, 2, 4], dtype=torch.float64) / 8)
    t, p_t = sampler.sample(1000, torch.Generator().manual_seed(0), "cpu")
    assert int(t.min()) >= 1 and int(t.max()) <= 4 and abs((t == 4).float().mean().item() - 0.5) < 0.06
    assert torch.allclose(p_t, sampler.probabilities()[t - 1])
    assert set(sampler.state_dict()) == {"loss_squared", "count"}


def test_sampling_times_skip_evenly():
    assert sampling_times(100, 10) == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    assert sampling_times(100, 100) == list(range(100, 0, -1))
    assert sampling_times(100, 25)[:3] == [100, 96, 92] and sampling_times(100, 25)[-1] == 4
    with pytest.raises(ValueError, match=r"sampling steps must be in \[1, 100\]"):
        sampling_times(100, 0)


def test_a_schedule_that_is_not_a_distribution_is_rejected():
    with pytest.raises(ValueError, match="abar_t \\+ gbar_t <= 1"):
        MaskAndReplaceSchedule(4, steps=3, alpha_cumulative=(0.9, 0.5), gamma_cumulative=(0.5, 0.6))
