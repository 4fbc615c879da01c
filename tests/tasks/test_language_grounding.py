"""Grounding on frozen codes: IoU and Acc@0.5 by hand, box validation, the L1 + GIoU model, the picture."""

from __future__ import annotations

import pytest
import torch
from language_doubles import distinct_codes, fit, frozen_tokenizer

from lgvq_tasks.language.boxes import check_boxes, grounding_picture, grounding_scores, paired_iou
from lgvq_tasks.language.config import GroundingConfig
from lgvq_tasks.language.grounding import GroundingModel


def test_acc_at_half_is_one_for_the_true_boxes_and_zero_for_disjoint_ones():
    truth = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 1.0, 1.0]])
    assert grounding_scores(truth.clone(), truth) == {"acc@0.5": 1.0, "mean_iou": 1.0}
    disjoint = torch.tensor([[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.2, 0.2]])
    assert grounding_scores(disjoint, truth) == {"acc@0.5": 0.0, "mean_iou": 0.0}


def test_iou_by_hand_and_clamping_to_the_image():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.5, 1.5]])  # second box clamps to 0.5..1
    b = torch.tensor([[0.25, 0.0, 0.75, 0.5], [0.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(paired_iou(a, b), torch.tensor([1 / 3, 1.0]))  # 0.125 / 0.375
    scores = grounding_scores(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([[0.0, 0.0, 0.5, 1.0]]))
    assert scores == {"acc@0.5": 1.0, "mean_iou": 0.5}  # IoU exactly 0.5 counts


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (torch.tensor([[0.5, 0.5, 0.2, 0.9]]), r"\[0\] .* x1 < x0"),
        (torch.tensor([[0.0, 0.0, 12.0, 30.0]]), "normalised"),
        (torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), "non-finite"),
        (torch.tensor([0.0, 0.0, 1.0, 1.0]), "b x 4"),
    ],
)
def test_bad_boxes_are_refused_with_the_key_named(boxes, message):
    with pytest.raises(ValueError, match=message):
        check_boxes(boxes)


def _batch(count: int, tokenizer) -> dict:
    """Expressions 'left'/'right' (token state +-1) pick the left or right half; the image decides the height."""
    codes = distinct_codes(count, tokenizer)
    side = torch.arange(count) % 2
    states = torch.zeros(count, 3, 6)
    states[:, 0, 0] = side * 2.0 - 1.0
    pad = torch.tensor([[True, True, False]]).repeat(count, 1)
    top = (codes[:, 0, 0] % 4).float() / 8  # 0, 1/8, 2/8, 3/8
    x0 = side.float() * 0.5
    boxes = torch.stack([x0, top, x0 + 0.5, top + 0.5], 1)
    return {"codes": codes, "text_states": states, "text_pad": pad, "boxes": boxes}


def test_grounding_model_fits_a_toy_set_and_padding_is_ignored():
    tokenizer = frozen_tokenizer()
    config = GroundingConfig(width=32, layers=2, heads=2, dropout=0.0)
    model = GroundingModel(config, tokenizer, text_width=6)
    batch = _batch(8, tokenizer)
    fit(model, batch, steps=150)
    predicted = model.predict(batch)
    assert grounding_scores(predicted, batch["boxes"])["acc@0.5"] == 1.0
    # whatever sits in padded text rows changes nothing
    noisy = dict(batch, text_states=batch["text_states"].clone())
    noisy["text_states"][:, 2] = 100.0
    torch.testing.assert_close(model.predict(noisy), predicted)


def test_grounding_loss_is_weighted_l1_plus_giou_and_zero_at_the_truth():
    tokenizer = frozen_tokenizer()
    model = GroundingModel(GroundingConfig(width=32, layers=1, heads=2, dropout=0.0), tokenizer, text_width=6)
    batch = _batch(2, tokenizer)
    out = model.training_loss(batch)
    torch.testing.assert_close(out["loss"].detach(), out["l1"] + out["giou_loss"])
    config = GroundingConfig(width=32, layers=1, heads=2, dropout=0.0, l1_weight=5.0, giou_weight=2.0)
    weighted = GroundingModel(config, tokenizer, text_width=6)
    weighted.load_state_dict(model.state_dict())
    out_weighted = weighted.training_loss(batch)
    torch.testing.assert_close(out_weighted["loss"].detach(), 5 * out["l1"] + 2 * out["giou_loss"])
    model.predict_cxcywh = lambda b: torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.375, 0.5, 0.5]])
    out = model.training_loss(batch)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-6)
    # first box shifted right by 0.1: L1 0.1 (summed coordinates) / 2 boxes; IoU = GIoU = 0.2 / 0.3
    model.predict_cxcywh = lambda b: torch.tensor([[0.35, 0.25, 0.5, 0.5], [0.75, 0.375, 0.5, 0.5]])
    out = model.training_loss(batch)
    assert out["l1"].item() == pytest.approx(0.05)
    assert out["giou_loss"].item() == pytest.approx((1 - 2 / 3) / 2, abs=1e-6)


def test_missing_or_misshapen_text_states_are_named():
    tokenizer = frozen_tokenizer()
    model = GroundingModel(GroundingConfig(width=32, layers=1, heads=2), tokenizer, text_width=6)
    batch = _batch(2, tokenizer)
    with pytest.raises(KeyError, match="'text_states'"):
        model.training_loss({k: v for k, v in batch.items() if k != "text_states"})
    with pytest.raises(ValueError, match="expected 2 x L x 6"):
        model.training_loss(dict(batch, text_states=torch.zeros(2, 3, 5)))


def test_picture_draws_true_and_predicted_boxes(tmp_path):
    truth = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    predicted = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    picture = grounding_picture(torch.zeros(1, 3, 16, 16), predicted, truth, ["the left circle"], size=64)
    assert picture.getpixel((0, 20)) == (30, 160, 60)  # true box edge, green
    assert picture.getpixel((63, 40)) == (220, 40, 40)  # predicted box edge, red
