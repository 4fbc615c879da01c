"""Reconstruction metrics on pairs whose PSNR, SSIM, FID, usage and perplexity are known in advance."""

from __future__ import annotations

import math
import time

import pytest
import torch
from task_doubles import IdentityTokenizer, ListData, id_images, trained_model
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

from lgvq_core.lpips import LPIPS
from lgvq_tasks.config import ReconstructionConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.fid import InceptionFeatures, SmallSplitFID, frechet_distance_from_features, tf_bilinear_resize
from lgvq_tasks.reconstruction import MeanPSNR, ReconstructionTask, psnr_per_image
from lgvq_tasks.usage import CodeUsage


def test_psnr_of_a_constant_offset_is_minus_ten_log10_of_its_square():
    images = torch.full((1, 3, 8, 8), 0.5)
    assert psnr_per_image(images, images + 0.1).item() == pytest.approx(20.0)  # MSE 0.01
    assert psnr_per_image(images, images - 0.01).item() == pytest.approx(40.0)  # MSE 1e-4


def test_psnr_of_identical_images_is_capped_at_100_db():
    images = torch.rand(2, 3, 4, 4)
    assert psnr_per_image(images, images).tolist() == pytest.approx([100.0, 100.0])


def test_mean_psnr_averages_per_image_values_not_the_pooled_error():
    metric = MeanPSNR()
    base = torch.full((1, 3, 4, 4), 0.5)
    metric.update(base + 0.1, base)  # 20 dB
    metric.update(base + 0.01, base)  # 40 dB
    assert metric.compute().item() == pytest.approx(30.0)  # pooled MSE would give 22.97 dB


def test_code_usage_and_perplexity_from_known_histograms():
    usage = CodeUsage(4)
    usage.update(torch.tensor([[0, 0], [1, 3]]))
    numbers = usage.compute()
    # p = (1/2, 1/4, 0, 1/4): 3 of 4 codes used, entropy 1.5 bits, perplexity 2^1.5
    assert numbers["usage"] == pytest.approx(0.75)
    assert numbers["perplexity"] == pytest.approx(2**1.5)
    usage.update(torch.tensor([2, 1, 3, 2, 0, 0]))  # now every code twice or more: (4, 2, 2, 2) / 10
    numbers = usage.compute()
    assert numbers["usage"] == 1.0
    p = torch.tensor([0.4, 0.2, 0.2, 0.2])
    assert numbers["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_uniform_usage_has_perplexity_equal_to_the_codebook_size():
    usage = CodeUsage(8)
    usage.update(torch.arange(8).repeat(5))
    assert usage.compute()["perplexity"] == pytest.approx(8.0)


def test_code_usage_rejects_indices_outside_the_codebook():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        CodeUsage(4).update(torch.tensor([4]))


def test_task_on_a_perfect_and_an_offset_reconstruction(tmp_path):
    textured = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    data = ListData(textured, [["x"]] * 5)
    metrics = ["psnr", "ssim", "usage"]
    perfect = ReconstructionTask(ReconstructionConfig(metrics=metrics, grid_images=3))
    results = perfect.run(trained_model(IdentityTokenizer(), batch_size=2), data, tmp_path)
    assert results["images"] == 5
    assert results["psnr"] == pytest.approx(100.0)
    assert results["ssim"] == pytest.approx(1.0, abs=1e-5)
    # the stub quantizer uses code 0 of 4 everywhere
    assert results["usage"] == pytest.approx(0.25) and results["perplexity"] == pytest.approx(1.0)
    assert (tmp_path / "reconstructions.png").is_file()

    offset = ReconstructionTask(ReconstructionConfig(metrics=["psnr"], grid_images=0))
    results = offset.run(trained_model(IdentityTokenizer(offset=0.2)), data, tmp_path / "offset")
    assert results["psnr"] == pytest.approx(20.0)  # 0.2 on [-1, 1] is 0.1 on [0, 1]
    assert set(results) == {"images", "psnr"}


def test_lpips_is_skipped_without_weights_and_zero_for_identical_images(tmp_path, capsys):
    data = ListData(id_images(2, size=16), [["x"]] * 2)
    model = trained_model(IdentityTokenizer())
    results = ReconstructionTask(ReconstructionConfig(metrics=["lpips"], grid_images=0)).run(model, data, tmp_path)
    assert "lpips" not in results
    assert "LPIPS skipped" in capsys.readouterr().out

    weights = tmp_path / "lpips.pth"
    torch.manual_seed(0)
    torch.save(LPIPS().state_dict(), weights)
    config = ReconstructionConfig(metrics=["lpips"], lpips_weights=[str(weights)], grid_images=0)
    assert ReconstructionTask(config).run(model, data, tmp_path)["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_tf_bilinear_resize_samples_input_at_i_times_in_over_out():
    row = torch.tensor([0.0, 10.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    # out pixel i reads position i * 2/4 = 0, 0.5, 1, 1.5 -> clamped at the last pixel
    assert tf_bilinear_resize(row, 4)[0, 0, 0].tolist() == pytest.approx([0.0, 5.0, 10.0, 10.0])


class SmallFeatures(nn.Module):
    """A fast 6-d stand-in for the Inception network (fixed random projection of the pixels)."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.randn(3 * 4 * 4, 6, generator=torch.Generator().manual_seed(0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().flatten(1) @ self.weight


def test_fid_from_features_equals_the_covariance_formula():
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(9, 5, generator=generator, dtype=torch.float64) * 2
    fake = torch.randn(7, 5, generator=generator, dtype=torch.float64) + 1
    expected = _compute_fid(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))
    assert frechet_distance_from_features(real, fake).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("count", [5, 9])  # below and above F = 6 features
def test_small_split_fid_matches_torchmetrics_fid(count):
    generator = torch.Generator().manual_seed(2)
    real = torch.rand(count, 3, 4, 4, generator=generator)
    fake = (real + 0.2 * torch.rand(count, 3, 4, 4, generator=generator)).clamp(0, 1)
    ours, reference = SmallSplitFID(feature=SmallFeatures()), FrechetInceptionDistance(feature=SmallFeatures())
    for metric in (ours, reference):
        metric.update(real[:3], real=True)
        metric.update(real[3:], real=True)
        metric.update(fake, real=False)
    assert (len(ours.real_features) > 0) == (count <= 6)
    assert ours.compute().item() == pytest.approx(reference.compute().item(), rel=1e-4, abs=1e-4)


def test_missing_fid_weights_file_says_how_to_supply_one(tmp_path):
    with pytest.raises(TaskError, match="fid_feature_weights file not found.*TorchScript"):
        InceptionFeatures(tmp_path / "missing.pt")


@pytest.mark.slow  # 8 Inception passes at 299 px: tens of seconds on a busy 2-core CPU
def test_fid_of_a_set_against_itself_is_zero_with_the_real_inception_network():
    started = time.perf_counter()
    features = InceptionFeatures()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=generator)
    fid = SmallSplitFID(feature=features)
    fid.update(images, real=True)
    fid.update(images, real=False)
    assert fid.compute().item() == pytest.approx(0.0, abs=1e-2)
    other = SmallSplitFID(feature=features)
    other.update(images, real=True)
    other.update(1 - images, real=False)
    assert other.compute().item() > 1.0
    assert features.num_features == 2048
    print(f"real-Inception FID test: {time.perf_counter() - started:.1f} s")
