"""Sampling filters, guidance and the condition maths of the generative priors, on hand-built tensors."""

from __future__ import annotations

import math

import pytest
import torch

from lgvq_tasks.generation.conditions import mode_pool_labels
from lgvq_tasks.generation.sampling import draw, filter_logits, guided_logits
from lgvq_tasks.generation.tokens import TokenLayout

LOGITS = torch.log(torch.tensor([[0.5, 0.1, 0.25, 0.15]]))  # probabilities 0.5, 0.1, 0.25, 0.15


def test_top_k_keeps_the_k_largest_logits():
    kept = filter_logits(LOGITS, top_k=2)
    assert torch.isfinite(kept).tolist() == [[True, False, True, False]]
    assert torch.equal(kept[0, [0, 2]], LOGITS[0, [0, 2]])


def test_top_p_keeps_the_smallest_set_reaching_p():
    # sorted: 0.5 (cum 0.5), 0.25 (0.75), 0.15 (0.9), 0.1 (1.0)
    assert torch.isfinite(filter_logits(LOGITS, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(LOGITS, top_p=0.6)).tolist() == [[True, False, True, False]]
    assert torch.isfinite(filter_logits(LOGITS, top_p=0.8)).tolist() == [[True, False, True, True]]
    assert torch.isfinite(filter_logits(LOGITS, top_p=1e-9)).tolist() == [[True, False, False, False]]


def test_temperature_divides_the_logits():
    hot = filter_logits(LOGITS, temperature=2.0)
    assert torch.allclose(hot, LOGITS / 2)
    probs = hot.softmax(-1)
    expected = torch.tensor([0.5, 0.1, 0.25, 0.15]).sqrt()
    assert torch.allclose(probs[0], expected / expected.sum())


def test_filters_are_independent_and_compose_in_order():
    # top-k 3 first drops 0.1; then top-p 0.6 over the renormalised (0.5, 0.25, 0.15)/0.9 keeps two codes
    kept = filter_logits(LOGITS, top_k=3, top_p=0.6)
    assert torch.isfinite(kept).tolist() == [[True, False, True, False]]
    assert torch.equal(filter_logits(LOGITS), LOGITS)


def test_draw_is_reproducible_and_respects_the_filter():
    logits = filter_logits(LOGITS.repeat(500, 1), top_k=2)
    first = draw(logits, torch.Generator().manual_seed(3))
    again = draw(logits, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert set(first.tolist()) == {0, 2}
    assert abs((first == 0).float().mean().item() - 0.5 / 0.75) < 0.08


def test_guidance_zero_is_unconditional_one_is_conditional():
    conditional, unconditional = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(guided_logits(conditional, unconditional, 0.0), unconditional)
    assert torch.allclose(guided_logits(conditional, unconditional, 1.0), conditional)
    assert torch.allclose(
        guided_logits(conditional, unconditional, 3.0), unconditional + 3 * (conditional - unconditional)
    )


def test_mode_pool_takes_the_most_frequent_label_per_cell():
    labels = torch.tensor(
        [
            [
                [0, 0, 1, 2],
                [0, 1, 2, 2],
                [3, 3, 1, 0],
                [3, 2, 0, 1],
            ]
        ]
    )
    # cells (2x2): top-left {0,0,0,1} -> 0; top-right {1,2,2,2} -> 2; bottom-left {3,3,3,2} -> 3;
    # bottom-right {1,0,0,1} tie -> the smaller label 0
    pooled = mode_pool_labels(labels, (2, 2), classes=4)
    assert pooled.tolist() == [[[0, 2], [3, 0]]]


def test_mode_pool_rejects_maps_that_do_not_tile_the_grid_or_unknown_labels():
    with pytest.raises(ValueError, match="cannot be pooled onto the 3x3 code grid"):
        mode_pool_labels(torch.zeros(1, 4, 4, dtype=torch.long), (3, 3), classes=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        mode_pool_labels(torch.full((1, 4, 4), 2), (2, 2), classes=2)


def test_token_ranges_never_collide():
    layout = TokenLayout(codebook_size=5, condition_vocab=3)
    ranges = layout.ranges()
    ids = [i for r in ranges.values() for i in r]
    assert sorted(ids) == list(range(layout.size)) == list(range(9))
    assert layout.start == 5 and layout.start not in ranges["codes"]
    tokens = layout.condition_tokens(torch.tensor([0, 2]), "segmentation")
    assert tokens.tolist() == [6, 8]
    assert not set(tokens.tolist()) & set(ranges["codes"]) and layout.start not in tokens.tolist()
    with pytest.raises(ValueError, match=r"segmentation: values must lie in \[0, 3\)"):
        layout.condition_tokens(torch.tensor([3]), "segmentation")


def test_unconditional_layout_has_codes_and_start_only():
    layout = TokenLayout(codebook_size=4)
    assert layout.size == 5 and len(layout.ranges()["condition"]) == 0
    assert math.isclose(layout.start, 4)


def test_generation_configs_import_no_torch_and_document_the_learning_rate_rule():
    import subprocess
    import sys

    code = (
        "import sys, lgvq_tasks.generation.config as c, lgvq_tasks.generation.tokens; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert abs(c.taming_learning_rate(36) - 4.5e-6 * 36) < 1e-15; "
        "assert c.GPT_ADAM_BETAS == (0.9, 0.95)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_fid_of_one_repeated_image_is_the_mean_gap_plus_the_reference_spread():
    from lgvq_tasks.fid import frechet_distance_from_features

    real = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    one = torch.tensor([[4.0, 1.0]], dtype=torch.float64)
    # mean (1, 1): gap (3, 0) -> 9; covariance diag(4/3, 4/3) -> trace 8/3; the repeated image has no spread
    assert float(frechet_distance_from_features(real, one.expand(2, -1))) == pytest.approx(9 + 8 / 3)
