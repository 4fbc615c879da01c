"""code-gpt: KV-cached sampling, completion, conditions, guidance, training and optimizer groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lgvq_core.downstream import FrozenTokenizer
from lgvq_tasks.generation.code_gpt import CodeGPT
from lgvq_tasks.generation.config import CodeGPTConfig

K, GRID, TEXT_WIDTH = 7, (3, 4), 6


def tokenizer(k: int = K) -> FrozenTokenizer:
    return FrozenTokenizer(codebook_size=k, grid=GRID, code_dim=4, codebook=torch.randn(k, 4))


def model(seed: int = 0, **config) -> CodeGPT:
    torch.manual_seed(seed)
    settings = {"layers": 2, "heads": 2, "width": 16, "text_width": TEXT_WIDTH, "text_length": 5}
    settings.update(config)
    return CodeGPT(CodeGPTConfig(**settings), tokenizer()).double().eval()


def text_condition(rows: int = 3, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(rows, 4, TEXT_WIDTH, generator=generator, dtype=torch.float64)
    pad = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    return {"text_states": states, "text_pad": pad[:rows]}


def segmentation(rows: int = 3) -> dict:
    return {"segmentation": torch.randint(0, 3, (rows, 6, 8), generator=torch.Generator().manual_seed(2))}


CASES = {
    "unconditional": ({}, None),
    "semantic-grid": ({"condition": "semantic", "condition_vocab": 3}, segmentation()),
    "semantic-vq": (
        {"condition": "semantic", "semantic_source": "vq", "condition_vocab": 5, "condition_length": 4},
        {"condition_codes": torch.randint(0, 5, (3, 2, 2), generator=torch.Generator().manual_seed(4))},
    ),
    "text": ({"condition": "text"}, text_condition()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cached_sampling_equals_uncached_sampling_token_for_token(case):
    config, condition = CASES[case]
    prior = model(**config)
    options = {"condition": condition, "count": 3, "top_k": 5, "temperature": 1.3}
    if case == "text":
        options["guidance_scale"] = 2.5
    cached = prior.sample(generator=torch.Generator().manual_seed(7), use_cache=True, **options)
    uncached = prior.sample(generator=torch.Generator().manual_seed(7), use_cache=False, **options)
    assert cached.shape == (3, *GRID)
    assert torch.equal(cached, uncached)
    other_seed = prior.sample(generator=torch.Generator().manual_seed(8), **options)
    assert not torch.equal(cached, other_seed)


def test_completion_keeps_the_given_part_exactly():
    prior = model(condition="completion", completion_fraction=0.5)
    codes = torch.randint(0, K, (4, *GRID), generator=torch.Generator().manual_seed(0))
    completed = prior.complete(codes, generator=torch.Generator().manual_seed(1))
    flat_in, flat_out = codes.flatten(1), completed.flatten(1)
    assert torch.equal(flat_out[:, :6], flat_in[:, :6])
    assert not torch.equal(flat_out[:, 6:], flat_in[:, 6:])  # the rest is sampled
    quarter = prior.complete(codes, fraction=0.25, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(quarter.flatten(1)[:, :3], flat_in[:, :3])


def test_guidance_zero_gives_the_null_condition_logits_and_one_the_conditional():
    prior = model(condition="text")
    condition = text_condition()
    given = torch.randint(0, K, (3, 5), generator=torch.Generator().manual_seed(3))
    unconditional = prior.next_logits(None, given)
    conditional = prior.next_logits(condition, given, guidance_scale=1.0)
    assert not torch.allclose(unconditional, conditional)
    assert torch.allclose(prior.next_logits(condition, given, guidance_scale=0.0), unconditional, atol=1e-12)
    assert torch.allclose(prior.next_logits(condition, given, guidance_scale=1.0 + 1e-12), conditional, atol=1e-9)
    scaled = prior.next_logits(condition, given, guidance_scale=3.0)
    assert torch.allclose(scaled, unconditional + 3.0 * (conditional - unconditional), atol=1e-9)


def test_padded_text_tokens_do_not_change_the_prediction():
    prior = model(condition="text")
    condition = text_condition()
    changed = {key: value.clone() for key, value in condition.items()}
    changed["text_states"][1, 2:] = 100.0  # padding of caption 1
    assert torch.allclose(prior.next_logits(condition), prior.next_logits(changed), atol=1e-12)
    changed["text_states"][1, 0] += 1.0  # a real token
    assert not torch.allclose(prior.next_logits(condition)[1], prior.next_logits(changed)[1])


def test_grid_condition_depends_only_on_the_pooled_labels():
    prior = model(condition="semantic", condition_vocab=3)
    maps = torch.zeros(1, 6, 8, dtype=torch.long)
    maps[0, :2, :2] = 1  # a full 2x2 cell of label 1
    moved_minority = maps.clone()
    moved_minority[0, 0, 0] = 2  # the cell's mode stays 1
    first = prior.next_logits({"segmentation": maps})
    assert torch.allclose(first, prior.next_logits({"segmentation": moved_minority}), atol=1e-12)
    other = maps.clone()
    other[0, :2, :2] = 2
    assert not torch.allclose(first, prior.next_logits({"segmentation": other}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(case):
    config, condition = CASES[case]
    prior = model(**config).float().train()
    batch = {"codes": torch.randint(0, K, (3, *GRID), generator=torch.Generator().manual_seed(5))}
    for key, value in (condition or {}).items():
        batch[key] = value.float() if value.is_floating_point() else value
    optimizer = torch.optim.AdamW(prior.param_groups(0.01), lr=3e-3, betas=(0.9, 0.95))
    torch.manual_seed(0)
    first = prior.training_loss(batch)
    assert torch.isclose(first["bits_per_code"], first["loss"] / torch.log(torch.tensor(2.0)))
    losses = []
    for _ in range(30):
        loss = prior.training_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_text_condition_dropout_uses_the_null_condition():
    prior = model(condition="text", condition_dropout=1.0).train()
    batch = {"codes": torch.randint(0, K, (3, *GRID)), **text_condition()}
    dropped = prior.training_loss(batch)["loss"]
    null_batch = {**batch, "text_states": torch.randn(3, 4, TEXT_WIDTH, dtype=torch.float64)}
    assert torch.allclose(dropped, prior.training_loss(null_batch)["loss"])  # captions never seen
    prior.eval()  # no dropout outside training
    assert not torch.allclose(prior.training_loss(batch)["loss"], prior.training_loss(null_batch)["loss"])


def test_param_groups_decay_linear_weights_only():
    prior = model(condition="text")
    decay, no_decay = prior.param_groups(0.1)
    linear_weights = {id(m.weight) for m in prior.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == linear_weights and decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in prior.named_parameters()}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "transformer.position_embedding" in undecayed and "text.null_states" in undecayed
    assert "transformer.token_embedding.weight" in undecayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(prior.parameters()))


def test_sequence_layout_and_block_size_check():
    prior = model(condition="semantic", condition_vocab=3)
    assert prior.prefix_length == 12 and prior.transformer.positions == 24
    assert prior.layout.size == K + 1 + 3
    with pytest.raises(ValueError, match="block_size 20 is shorter than the 24 inputs"):
        model(condition="semantic", condition_vocab=3, block_size=20)
    with pytest.raises(ValueError, match="needs condition_vocab"):
        model(condition="semantic")


def test_bad_batches_name_the_key_and_what_to_do():
    prior = model(condition="text")
    codes = torch.randint(0, K, (2, *GRID))
    with pytest.raises(KeyError, match="no 'text_states'"):
        prior.training_loss({"codes": codes})
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 7\)"):
        prior.training_loss({"codes": codes + K, **text_condition(2)})
    with pytest.raises(ValueError, match="text_width"):
        prior.training_loss({"codes": codes, "text_states": torch.zeros(2, 3, 9), "text_pad": torch.ones(2, 3)})
    with pytest.raises(ValueError, match="positive sample count"):
        model().sample(count=0)


def test_paper_preset():
    paper = CodeGPTConfig.paper()
    assert (paper.layers, paper.heads, paper.width, paper.block_size) == (16, 16, 1024, 512)
    big = CodeGPT(CodeGPTConfig.paper(layers=1, condition="semantic", condition_vocab=19), tokenizer(1024))
    assert big.transformer.positions == 512


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_parameter_gets_a_gradient_even_without_dropped_captions(case):
    """No parameter sits unused in a step (distributed training needs no unused-parameter search)."""
    config, condition = CASES[case]
    prior = model(condition_dropout=0.0, **config).train()
    batch = {"codes": torch.randint(0, K, (3, *GRID)), **(condition or {})}
    prior.training_loss(batch)["loss"].backward()
    assert [name for name, p in prior.named_parameters() if p.grad is None] == []
