"""The codebook picture: one decoded patch per code, tiled ceil(sqrt K) wide, in code order."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from task_doubles import IdentityTokenizer, ListData, PassThroughQuantizer, id_images, trained_model

from lgvq_tasks.codebook import CodebookTask, decode_each_code, grid_columns
from lgvq_tasks.config import CodebookConfig


class PaletteTokenizer(IdentityTokenizer):
    """Code k decodes to a flat 4×4 patch of grey level k / 10 (on [-1, 1])."""

    def __init__(self, codebook_size: int) -> None:
        super().__init__(PassThroughQuantizer(codebook_size=codebook_size, dim=3))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        assert indices.shape[1:] == (1, 1)  # each code on its own, as a 1×1 latent
        level = indices.float().view(-1, 1, 1, 1) / 10
        return level.expand(-1, 3, 4, 4)


@pytest.mark.parametrize(("size", "columns"), [(10, 4), (16, 4), (17, 5), (1024, 32)])
def test_grid_is_ceil_sqrt_k_wide(size, columns):
    assert grid_columns(size) == columns


def test_codes_are_decoded_in_order_across_batches():
    patches = decode_each_code(PaletteTokenizer(10), chunk=3)
    assert patches.shape == (10, 3, 4, 4)
    assert patches[:, 0, 0, 0].tolist() == pytest.approx([k / 10 for k in range(10)])


def test_codebook_png_has_one_patch_per_code_and_the_usage_histogram(tmp_path):
    model = trained_model(PaletteTokenizer(10), batch_size=2)
    results = CodebookTask(CodebookConfig(patch_scale=2, decode_batch=4)).run(
        model, ListData(id_images(3), [["x"]] * 3), tmp_path
    )
    picture = Image.open(tmp_path / "codebook.png")
    assert picture.size == (4 * 4 * 2, 3 * 4 * 2)  # 4 columns x 3 rows of 8-pixel cells
    # code 5 sits in row 1, column 1; grey level 0.5 on [-1, 1] is 191 of 255
    assert picture.getpixel((1 * 8 + 3, 1 * 8 + 3)) == (191, 191, 191)
    assert Image.open(tmp_path / "code-usage.png").width > 0
    # the stub quantizer puts every position on code 0
    assert results["codebook_size"] == 10 and results["dead_codes"] == 9
    assert results["usage"] == pytest.approx(0.1) and results["top_code_share"] == 1.0
    assert results["patch_size"] == 4 and results["grid_columns"] == 4
