"""CodeDataset with condition codes: items carry them, flipped with the image codes, and a bad one is unreadable."""

from __future__ import annotations

import pytest
import torch

from lgvq_core.context import BuildContext
from lgvq_core.data.codes import CodeDataset
from lgvq_core.registry import get_registry
from lgvq_core.run_file import structure_component


@pytest.fixture()
def shapes():
    component = structure_component("dataset", {"type": "shapes", "image_size": 32, "num_train": 4, "num_val": 2})
    return get_registry().build("dataset", component, "$.data", BuildContext(split="train"))


def codes(offset: int, valid=(True, True, True, True)) -> dict[str, torch.Tensor]:
    indices = torch.arange(4 * 4, dtype=torch.int16).view(4, 2, 2) + offset
    return {"indices": indices, "indices_flipped": indices.flip(-1), "valid": torch.tensor(valid)}


def test_items_carry_the_condition_codes_flipped_with_the_image_codes(shapes):
    data = CodeDataset(codes(0), shapes, condition_codes=codes(100))
    assert torch.equal(data[2]["condition_codes"], torch.tensor([[108, 109], [110, 111]]))
    seen = set()
    for seed in range(16):
        item = data[(1, seed)]
        flipped = torch.equal(item["codes"], torch.tensor([[5, 4], [7, 6]]))
        seen.add(flipped)
        expected = torch.tensor([[105, 104], [107, 106]]) if flipped else torch.tensor([[104, 105], [106, 107]])
        assert torch.equal(item["condition_codes"], expected), seed
    assert seen == {True, False}  # both views were drawn
    batch = data.collate([data[0], data[3]])
    assert batch["condition_codes"].shape == (2, 2, 2)


def test_an_item_the_condition_cache_could_not_read_is_unreadable(shapes):
    data = CodeDataset(codes(0), shapes, condition_codes=codes(100, valid=(True, False, True, True)))
    assert "error" in data[1] and "codes" in data[2]


def test_condition_codes_of_another_length_are_refused(shapes):
    other = {k: v[:3] for k, v in codes(100).items()}
    with pytest.raises(ValueError, match="the cached condition codes hold 3 items but the image codes 4"):
        CodeDataset(codes(0), shapes, condition_codes=other)


def test_partner_codes_give_every_image_another_one_whatever_the_batch():
    import torch

    from lgvq_core.data.codes import CodeDataset

    class Images:
        split = "val"

        def __len__(self):
            return 7

        def questions(self, index):
            return []

    indices = torch.arange(7)[:, None, None].expand(7, 2, 2).to(torch.int16)
    valid = torch.ones(7, dtype=torch.bool)
    valid[3] = False  # unreadable: never a partner
    data = CodeDataset({"indices": indices, "valid": valid}, Images())
    readable = [0, 1, 2, 4, 5, 6]
    partners = data.partner_codes(readable, seed=5)[:, 0, 0].tolist()
    assert all(p != i for p, i in zip(partners, readable, strict=True)) and sorted(partners) == readable
    assert data.partner_codes([2, 2, 4], seed=5)[:, 0, 0].tolist() == [partners[2], partners[2], partners[3]]
    fresh = CodeDataset({"indices": indices, "valid": valid}, Images())
    assert fresh.partner_codes(readable, seed=5)[:, 0, 0].tolist() == partners  # the seed decides the pairing
