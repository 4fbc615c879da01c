"""Relation MSE (Table 4): words matched to codes through the code ViT, then word cosines vs code cosines."""

from __future__ import annotations

import math

import pytest
import torch

from lgvq_tasks.errors import TaskError
from lgvq_tasks.relation import matched_codes, pair_mask, relation_matrices, single_code_indices


def test_each_word_takes_the_code_at_its_most_similar_position():
    words = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # 1 caption, 2 tokens
    code_tokens = torch.tensor([[[0.9, 0.1], [0.1, 0.9], [-5.0, 0.0]]])  # 3 positions
    indices = torch.tensor([[5, 7, 9]])  # code index at each position
    assert matched_codes(words, code_tokens, indices).tolist() == [[5, 7]]


def test_relation_error_by_hand():
    words = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # cosine 1/sqrt(2)
    codes = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])  # cosine 0
    q, p = relation_matrices(words, codes)
    root_half = 1 / math.sqrt(2)
    assert torch.allclose(q[0], torch.tensor([[1.0, root_half], [root_half, 1.0]]))
    assert torch.allclose(p[0], torch.eye(2))
    word_mask = torch.tensor([[True, True]])
    off_diagonal = (p - q)[pair_mask(word_mask, "words-offdiag")].pow(2).mean()
    with_diagonal = (p - q)[pair_mask(word_mask, "words")].pow(2).mean()
    assert off_diagonal.item() == pytest.approx(0.5)  # two pairs, each (0 - 1/sqrt(2))^2
    assert with_diagonal.item() == pytest.approx(0.25)  # the diagonal adds two zero errors


def test_pairs_never_include_specials_or_padding():
    word_mask = torch.tensor([[False, True, True, False, False]])  # SOT, two words, EOT, pad
    mask = pair_mask(word_mask, "words-offdiag")[0]
    assert mask.nonzero().tolist() == [[1, 2], [2, 1]]
    assert pair_mask(word_mask, "words")[0].sum() == 4


def test_quantizers_with_several_codes_per_position_are_refused():
    assert single_code_indices(torch.zeros(2, 1, 3, 3, dtype=torch.long)).shape == (2, 9)
    with pytest.raises(TaskError, match="several codes per position"):
        single_code_indices(torch.zeros(2, 3, 4, 4, dtype=torch.long))
