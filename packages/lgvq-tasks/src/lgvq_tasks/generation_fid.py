"""``generation-fid``: FID of a downstream model's samples against the validation images.

The samples are drawn by :func:`lgvq_core.runner.generate.generate_images` (conditions from the
validation split, one seeded generator) and decoded by the frozen tokenizer; the reference is the
validation split at its deterministic transform. The result holds, beside the number, everything
that decides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lgvq_core.api import TrainedModel, to_unit_range
from lgvq_tasks.config import GenerationFIDConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.split import LOCAL_METRIC


class GenerationFID:
    name = "generation-fid"

    def __init__(self, config: GenerationFIDConfig) -> None:
        self.config = config

    def run(self, model: TrainedModel, data: Any, out_dir: Path) -> dict[str, Any]:
        from lgvq_core.api import generate_images, save_images
        from lgvq_tasks.fid import InceptionFeatures, SmallSplitFID

        run = model.downstream_run
        if run is None:
            raise TaskError(
                "generation-fid: scores the samples of a downstream model; this is a tokenizer run "
                "(train a [downstream] model on its codes first)"
            )
        config = self.config
        images = data.images  # the validation images the codes came from
        reference = len(images) if config.reference_images is None else min(config.reference_images, len(images))
        if reference < 2 or config.samples < 2:
            raise TaskError(
                f"generation-fid: FID needs at least 2 images per side ({reference} reference, {config.samples} samples)"
            )
        fid = SmallSplitFID(feature=InceptionFeatures(config.fid_feature_weights), **LOCAL_METRIC).to(model.device)
        for start in range(0, reference, config.batch_size):
            batch = [images[i] for i in range(start, min(start + config.batch_size, reference))]
            real = torch.stack([item["image"] for item in batch if "error" not in item])
            fid.update(to_unit_range(real).to(model.device), real=True)
        drawn: list[torch.Tensor] = []
        generated, record = generate_images(
            run, config.samples, config.seed, config.sampling_options(), config.batch_size, codes_out=drawn
        )
        for start in range(0, len(generated), config.batch_size):
            fid.update(to_unit_range(generated[start : start + config.batch_size]).to(model.device), real=False)
        print(f"generation-fid: FID of {len(generated)} samples against {reference} validation images", flush=True)
        if config.save_images:
            save_images(generated[: config.save_images], out_dir, record)
        width = fid.keep_limit
        if min(len(generated), reference) < width:
            print(
                f"generation-fid: FID from {len(generated)} samples and {reference} reference images (fewer than the "
                f"{width} feature dimensions) is biased upwards; compare it only with FIDs from the same numbers, "
                "and with the floor and ceiling beside it",
                flush=True,
            )
        result = {
            "fid": float(fid.compute()),
            "better": {"fid": "lower"},
            "samples": len(generated),
            "reference": {"split": "val", "dataset": run.config.data.type, "images": reference},
            **self._bounds(fid, run, reference, model.device),
            **{k: v for k, v in record.items() if k != "samples"},
        }
        if config.attribute_probe:
            result["attributes"] = self._attributes(run, torch.cat(drawn))
            if isinstance(result["attributes"], dict):
                result["better"]["attributes.tv_mean"] = "lower"
        return result

    def _bounds(self, fid: Any, run: Any, reference: int, device: torch.device) -> dict[str, Any]:
        """What the FID is measured between: the floor (validation images, one half against the other:
        what a perfect model scores at this size) and the ceiling (the mean training image, repeated:
        a model that draws one grey average)."""
        from lgvq_tasks.fid import _stacked, frechet_distance_from_features

        real = _stacked(fid.real_features)
        if real is None or real.shape[0] != int(fid.real_features_num_samples) or real.shape[0] < 4:
            return {"floor": "not computed: the reference features were not kept (more images than dimensions)"}
        floor = frechet_distance_from_features(real[0::2], real[1::2])
        train = run.train_data.images
        count = min(reference, len(train))
        total = None
        for start in range(0, count, self.config.batch_size):
            items = [train[i] for i in range(start, min(start + self.config.batch_size, count))]
            batch = torch.stack([item["image"] for item in items if "error" not in item]).double().sum(0)
            total = batch if total is None else total + batch
        mean_image = (total / count).float()
        feature = fid.inception(to_unit_range(mean_image[None]).to(device)).double().reshape(1, -1)
        ceiling = frechet_distance_from_features(real, feature.expand(2, -1))  # one image: no spread
        halves = f"{real[0::2].shape[0]} vs {real[1::2].shape[0]}"
        print(
            f"generation-fid: floor {float(floor):.1f} (validation halves, {halves}), ceiling {float(ceiling):.1f} "
            "(the mean training image)",
            flush=True,
        )
        return {
            "floor": {"fid": float(floor), "what": f"validation images, one half against the other ({halves})"},
            "ceiling": {
                "fid": float(ceiling),
                "what": f"the mean of {count} training images against the validation images",
            },
        }

    def _attributes(self, run: Any, codes: torch.Tensor) -> dict[str, Any] | str:
        """The attribute gap of the samples' codes (:func:`~lgvq_tasks.code_probe.attribute_gap`), or why not."""
        from lgvq_tasks.code_probe import attribute_gap, missing_attributes

        reason = missing_attributes(run.train_data.images, self.name)
        if reason is not None:
            return f"not measured: {reason}"
        config = self.config
        print(f"generation-fid: attributes of {len(codes)} samples' codes against the validation codes", flush=True)
        with torch.random.fork_rng(devices=[]):
            gap = attribute_gap(
                run.tokenizer.quantizer,
                {"train": run.train_data, "val": run.val_data},
                codes,
                train_images=config.probe_train_images,
                seed=config.seed,
            )
        worst = max(gap["tv_distance"], key=gap["tv_distance"].get)
        print(
            f"generation-fid: attribute TV distance, mean {gap['tv_mean']:.3f} (largest: {worst} "
            f"{gap['tv_distance'][worst]:.3f})",
            flush=True,
        )
        return gap


def build_generation_fid(config: GenerationFIDConfig, context=None) -> GenerationFID:
    return GenerationFID(config)
