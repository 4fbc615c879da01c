"""text-to-image discrete diffusion: training, guidance, truncation and step-skipping sampling."""

from __future__ import annotations

import pytest
import torch

from lgvq_core.downstream import FrozenTokenizer
from lgvq_tasks.generation.config import TextToImageConfig
from lgvq_tasks.generation.diffusion_model import TextToImageDiffusion
from lgvq_tasks.generation.discrete_diffusion import LOG_ZERO

K, GRID, TEXT_WIDTH = 6, (2, 3), 8


def model(seed: int = 0, **config) -> TextToImageDiffusion:
    torch.manual_seed(seed)
    settings = {"layers": 2, "heads": 2, "width": 16, "steps": 20, "text_width": TEXT_WIDTH, "text_length": 5}
    settings.update(config)
    tokenizer = FrozenTokenizer(codebook_size=K, grid=GRID, code_dim=4, codebook=torch.randn(K, 4))
    return TextToImageDiffusion(TextToImageConfig(**settings), tokenizer)


def captions(rows: int = 4, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    pad = torch.ones(rows, 4, dtype=torch.bool)
    pad[1, 2:] = False
    return {"text_states": torch.randn(rows, 4, TEXT_WIDTH, generator=generator), "text_pad": pad}


def fixed_batch() -> dict:
    return {"codes": torch.randint(0, K, (4, *GRID), generator=torch.Generator().manual_seed(3)), **captions()}


def evaluation_loss(diffusion: TextToImageDiffusion, batch: dict) -> float:
    """The loss on the same t, x_t and draws every time (a seeded generator in the batch)."""
    diffusion.eval()
    with torch.no_grad():
        losses = [
            diffusion.training_loss({**batch, "generator": torch.Generator().manual_seed(seed)})["loss"].item()
            for seed in range(8)
        ]
    diffusion.train()
    return sum(losses) / len(losses)


@pytest.mark.parametrize("importance", [True, False])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(importance):
    diffusion = model(importance_sampling=importance, auxiliary_weight=0.1, condition_dropout=0.0).train()
    batch = fixed_batch()
    before = evaluation_loss(diffusion, batch)
    optimizer = torch.optim.AdamW(diffusion.param_groups(0.01), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        loss = diffusion.training_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluation_loss(diffusion, batch) < 0.7 * before
    assert int(diffusion.time_sampler.count.sum()) == 40 * 4  # every training image's t was recorded


def test_loss_terms_are_finite_and_consistent():
    diffusion = model()
    out = diffusion.training_loss({**fixed_batch(), "generator": torch.Generator().manual_seed(0)})
    assert set(out) == {"loss", "vlb_term", "x0_nll"}
    assert all(torch.isfinite(value) for value in out.values())
    assert out["vlb_term"] >= 0 and out["x0_nll"] > 0
    assert out["loss"].requires_grad


def test_guidance_zero_is_the_null_text_and_one_the_caption():
    diffusion = model().eval()
    condition = captions()
    x_t = torch.randint(0, K + 1, (4, 6), generator=torch.Generator().manual_seed(5))
    t = torch.full((4,), 7)
    unconditional = diffusion.guided_log_x0(x_t, t, None, 4, 1.0, None)
    conditional = diffusion.guided_log_x0(x_t, t, condition, 4, 1.0, None)
    assert not torch.allclose(unconditional, conditional)
    assert torch.allclose(diffusion.guided_log_x0(x_t, t, condition, 4, 0.0, None), unconditional, atol=1e-5)
    assert torch.allclose(diffusion.guided_log_x0(x_t, t, condition, 4, 1.0 + 1e-9, None), conditional, atol=1e-5)
    strong = diffusion.guided_log_x0(x_t, t, condition, 4, 3.0, None)
    expected = (unconditional + 3.0 * (conditional - unconditional)).log_softmax(-1)
    assert torch.allclose(strong, expected, atol=1e-5)


def test_truncation_keeps_the_top_mass_and_renormalises():
    diffusion = model().eval()
    x_t = torch.full((4, 6), K)
    t = torch.full((4,), 20)
    full = diffusion.guided_log_x0(x_t, t, captions(), 4, 1.0, None).exp()
    truncated = diffusion.guided_log_x0(x_t, t, captions(), 4, 1.0, 0.5).exp()
    assert torch.allclose(truncated.sum(-1), torch.ones(4, 6), atol=1e-5)
    kept = truncated > 1e-20
    for row, keep in zip(full.view(-1, K), kept.view(-1, K), strict=True):
        order = row.argsort(descending=True)
        cumulative_before = row[order].cumsum(0) - row[order]
        assert keep[order].tolist() == (cumulative_before < 0.5).tolist()
    assert torch.allclose(truncated[kept], (full * kept / (full * kept).sum(-1, keepdim=True))[kept], atol=1e-5)
    assert LOG_ZERO < 0


@pytest.mark.parametrize("steps", [20, 5, 2])
def test_sampling_with_skipped_steps_gives_codes_reproducibly(steps):
    diffusion = model().eval()
    first = diffusion.sample(captions(), steps=steps, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    again = diffusion.sample(captions(), steps=steps, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    assert first.shape == (4, *GRID) and torch.equal(first, again)
    assert int(first.min()) >= 0 and int(first.max()) < K  # never [MASK]
    null_text = diffusion.sample(count=3, steps=steps, generator=torch.Generator().manual_seed(1))
    assert null_text.shape == (3, *GRID)


def test_sampling_with_a_certain_predictor_returns_its_codes(monkeypatch):
    """A predictor sure of x0 steps back towards it: the sample is x0.

    Intermediate states could hold another code only through the replace path, with probability of order
    bbar_t < 1e-6 per code in this schedule; the seeded draw has none.
    """
    diffusion = model().eval()
    target = torch.randint(0, K, (4, 6), generator=torch.Generator().manual_seed(9))
    seen = []

    def certain(x_t, t, text, keep):
        seen.append(x_t.clone())
        return torch.full((*x_t.shape, K), LOG_ZERO).scatter(-1, target[..., None], 0.0)

    monkeypatch.setattr(diffusion, "log_x0", certain)
    sample = diffusion.sample(captions(), steps=5, truncation=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample.flatten(1), target)
    assert bool((seen[0] == K).all())  # sampling starts from all [MASK]
    for x_t in seen[1:]:  # each intermediate code is the target code or still [MASK]
        assert bool(((x_t == K) | (x_t == target)).all())


def test_bad_input_is_named():
    diffusion = model()
    with pytest.raises(KeyError, match="no 'text_states'"):
        diffusion.training_loss({"codes": torch.zeros(2, *GRID, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"codes must be b x 2 x 3"):
        diffusion.training_loss({"codes": torch.zeros(2, 3, 3, dtype=torch.long), **captions(2)})
    empty = captions(2)
    empty["text_pad"][0] = False
    with pytest.raises(ValueError, match="has no real token"):
        diffusion.training_loss({"codes": torch.zeros(2, *GRID, dtype=torch.long), **empty})
    with pytest.raises(ValueError, match="positive sample count"):
        diffusion.sample(count=0)


def test_paper_preset_and_optimizer_groups():
    paper = TextToImageConfig.paper()
    assert (paper.layers, paper.width, paper.heads, paper.steps, paper.truncation) == (19, 1024, 16, 100, 0.86)
    assert paper.alpha_cumulative == (0.99999, 9e-6) and paper.gamma_cumulative == (9e-6, 0.99999)
    diffusion = model()
    decay, no_decay = diffusion.param_groups(0.1)
    assert all(p.dim() == 2 for p in decay["params"])
    names = {id(p): n for n, p in diffusion.named_parameters()}
    assert {"position_embedding", "text.null_states", "token_embedding.weight"} <= {
        names[id(p)] for p in no_decay["params"]
    }


def test_every_parameter_gets_a_gradient_even_without_dropped_captions():
    """No parameter sits unused in a step (distributed training needs no unused-parameter search)."""
    diffusion = model(condition_dropout=0.0).train()
    diffusion.training_loss(fixed_batch())["loss"].backward()
    assert [name for name, p in diffusion.named_parameters() if p.grad is None] == []


def test_resumed_model_continues_with_the_same_time_sampling():
    diffusion = model(importance_sampling=True).train()
    diffusion.time_sampler.count.fill_(11)  # past the uniform warm-up: t follows the recorded losses
    diffusion.time_sampler.loss_squared.copy_(torch.rand(21, dtype=torch.float64))
    diffusion.training_loss({**fixed_batch(), "generator": torch.Generator().manual_seed(0)})
    assert not torch.allclose(diffusion.time_sampler.probabilities(), torch.full((20,), 0.05, dtype=torch.float64))
    restored = model(seed=5, importance_sampling=True).train()
    restored.load_state_dict(diffusion.state_dict())
    assert torch.equal(restored.time_sampler.loss_squared, diffusion.time_sampler.loss_squared)
    batch = {**fixed_batch(), "generator": torch.Generator().manual_seed(99)}
    expected = diffusion.training_loss({**batch, "generator": torch.Generator().manual_seed(99)})["loss"]
    assert torch.equal(restored.training_loss(batch)["loss"], expected)
