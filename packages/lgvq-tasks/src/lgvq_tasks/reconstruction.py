"""``reconstruction``: how well the tokenizer reproduces the validation images (the paper's Table 1).

docs/method.md: Evaluation protocols.

rFID (reconstructions vs originals, Inception pool3), PSNR per image on [0, 1] averaged, SSIM
(11×11 Gaussian, σ 1.5), LPIPS when weights are given, and codebook usage / perplexity over the
split. Every metric accumulates in a torchmetrics ``Metric``, so the numbers are the same whether
the split is walked by one process or sharded over ``torchrun``'s ranks (states summed, FID
features gathered).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric, SumMetric

from lgvq_core.api import psnr_per_image, save_reconstruction_grid
from lgvq_tasks.config import ReconstructionConfig
from lgvq_tasks.split import metric_options, split_batches
from lgvq_tasks.usage import CodeUsage


class MeanPSNR(Metric):
    """PSNR per image on [0, 1], averaged over every image seen (not the PSNR of the pooled MSE)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, recon: torch.Tensor, images: torch.Tensor) -> None:
        values = psnr_per_image(images, recon)
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def load_lpips_metric(paths: list[str]) -> Any:
    """lgvq-core's LPIPS (the network VQ-GAN's perceptual loss uses) with the given weights."""
    from lgvq_core.api import load_lpips

    return load_lpips(paths)


class ReconstructionTask:
    name = "reconstruction"
    shards_split = True

    def __init__(self, config: ReconstructionConfig) -> None:
        self.config = config

    def _metrics(self, model: Any) -> tuple[dict[str, Any], Any]:
        """The requested metrics (on the model's device) and the LPIPS network when LPIPS is computed."""
        from torchmetrics.image import StructuralSimilarityIndexMeasure

        from lgvq_tasks.fid import InceptionFeatures, SmallSplitFID

        wanted = list(dict.fromkeys(self.config.metrics))
        options = metric_options(model)
        built: dict[str, Any] = {}
        lpips_network = None
        for name in wanted:
            if name == "psnr":
                built[name] = MeanPSNR(**options)
            elif name == "ssim":
                built[name] = StructuralSimilarityIndexMeasure(
                    gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, **options
                )
            elif name == "fid":
                features = InceptionFeatures(self.config.fid_feature_weights)
                built[name] = SmallSplitFID(feature=features, **options)
            elif name == "lpips":
                if not self.config.lpips_weights:
                    print(
                        "reconstruction: LPIPS skipped (no lpips_weights: LPIPS weights cannot be downloaded offline; "
                        "set lpips_weights to local files to compute it)",
                        flush=True,
                    )
                    continue
                built[name] = MeanMetric(**options)
                lpips_network = load_lpips_metric(self.config.lpips_weights).to(model.device)
            elif name == "usage":
                built[name] = CodeUsage(model.tokenizer.quantizer.codebook_size, **options)
        return {name: metric.to(model.device) for name, metric in built.items()}, lpips_network

    @torch.no_grad()
    def run(self, model: Any, data: Any, out_dir: Path) -> dict[str, Any]:
        config = self.config
        metrics, lpips_network = self._metrics(model)
        tokenizer = model.tokenizer
        shown: list[tuple[torch.Tensor, torch.Tensor]] = []
        shown_count = 0
        images_counted = SumMetric(**metric_options(model)).to(model.device)
        for batch in split_batches(self.name, data, model, config):
            images = batch.images
            output = tokenizer(images)
            recon = output.recon.float().clamp(-1, 1)
            images01, recon01 = images.float().clamp(-1, 1).add(1).div(2), recon.add(1).div(2)
            images_counted.update(torch.tensor(float(images.shape[0]), device=model.device))
            if "psnr" in metrics:
                metrics["psnr"].update(recon01, images01)
            if "ssim" in metrics:
                metrics["ssim"].update(recon01, images01)
            if "fid" in metrics:
                metrics["fid"].update(images01, real=True)
                metrics["fid"].update(recon01, real=False)
            if "lpips" in metrics:
                metrics["lpips"].update(lpips_network(recon, images.float()))
            if "usage" in metrics:
                metrics["usage"].update(output.indices)
            if shown_count < config.grid_images:
                take = min(config.grid_images - shown_count, images.shape[0])
                shown.append((images[:take].cpu(), recon[:take].cpu()))
                shown_count += take

        images_seen = int(images_counted.compute())  # over every rank
        results: dict[str, Any] = {"images": images_seen}
        if "psnr" in metrics:
            results["psnr"] = float(metrics["psnr"].compute())
        if "ssim" in metrics:
            results["ssim"] = float(metrics["ssim"].compute())
        if "fid" in metrics:
            if images_seen < 2:
                print("reconstruction: FID needs at least 2 images; reported as null", flush=True)
                results["fid"] = None
            else:
                print(f"reconstruction: computing FID from {images_seen} image pairs", flush=True)
                results["fid"] = float(metrics["fid"].compute())
            width = metrics["fid"].keep_limit
            if images_seen < width:
                print(
                    f"reconstruction: FID from {images_seen} images (fewer than the {width} feature dimensions) is "
                    "biased upwards; compare it only with FIDs from the same number of images",
                    flush=True,
                )
        if "lpips" in metrics:
            results["lpips"] = float(metrics["lpips"].compute())
        if "usage" in metrics:
            usage = metrics["usage"].compute()
            results["usage"] = usage["usage"]
            results["perplexity"] = usage["perplexity"]
        if shown and model.shard.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            originals = torch.cat([s[0] for s in shown])
            recons = torch.cat([s[1] for s in shown])
            save_reconstruction_grid(originals, recons, out_dir / "reconstructions.png")
        return results


def build_reconstruction(config: ReconstructionConfig, context: Any) -> ReconstructionTask:
    return ReconstructionTask(config)
