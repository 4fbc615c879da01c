"""Validation during training, the best checkpoint, and reconstruction samples.

Validation computes the reconstruction and quantizer terms, PSNR and codebook usage over the
validation split; the alignment losses are skipped, as in the official code.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from lgvq_core.image_quality import psnr_per_image, to_unit_range
from lgvq_core.quantizers.base import usage_from_counts
from lgvq_core.runner import distributed as distr
from lgvq_core.runner import guard
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.samples import save_reconstruction_grid
from lgvq_core.runner.state import save

#: Validation metrics shown on the progress line.
SHOWN = ("loss", "rec_loss", "psnr", "codebook_usage", "perplexity", "bits_per_code")


@torch.no_grad()
def validate(run: RunContext, loader: DataLoader) -> dict[str, float]:
    """Mean of every generator loss term, PSNR, codebook usage and perplexity (all ranks)."""
    run.model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64, device=run.device)
    codebook_size = run.model.quantizer.codebook_size
    code_counts = torch.zeros(codebook_size, dtype=torch.float64, device=run.device)
    limit = run.config.train.val_batches
    skipped: list[tuple[int, str]] = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        skipped.extend(batch.get("skipped", []))
        if batch["image"] is None:
            continue
        images = batch["image"].to(run.device)
        with run.autocast():
            output = run.model(images)
            terms = dict(run.model.generator_loss(images, output, run.step, None))
        terms["loss"] = terms.pop("total")
        terms["psnr"] = psnr_per_image(to_unit_range(images), to_unit_range(output.recon)).mean()
        n = images.shape[0]
        for name, value in terms.items():
            value = value.detach().double() * n
            sums[name] = sums[name] + value if name in sums else value
        count += n
        code_counts += torch.bincount(output.indices.flatten(), minlength=codebook_size)[:codebook_size].double()
    run.model.train()
    report_validation_skips(run, skipped)
    names = sorted(sums)
    if run.dist.enabled:
        import torch.distributed as dist

        names = distr.broadcast_object(names, run.dist)  # a rank with no items has no names
        zero = torch.zeros((), dtype=torch.float64, device=run.device)
        packed = torch.stack([sums.get(n, zero) for n in names] + [count])
        dist.all_reduce(packed)
        dist.all_reduce(code_counts)
        sums = dict(zip(names, packed[:-1], strict=True))
        count = packed[-1]
    if count.item() == 0:
        return {}
    metrics = {name: float(sums[name] / count) for name in names}
    usage = usage_from_counts(code_counts)
    metrics["codebook_usage"] = usage["usage"]
    metrics["perplexity"] = usage["perplexity"]
    return metrics


def report_validation_skips(run: RunContext, skipped: list[tuple[int, str]]) -> None:
    """Say which validation items were skipped as unreadable (``train.skip_bad_items``): every item
    the first time, the count on later validations."""
    if not skipped:
        return
    first = not run.validation_skips_listed
    run.validation_skips_listed = True
    items = sorted({index for index, _ in skipped})
    run.log(
        f"validation @ step {run.step}: skipped {len(items)} unreadable item(s) of the validation split "
        "(train.skip_bad_items = true); its metrics cover the others"
        + ("" if first else " (listed at the first validation)")
    )
    if first:
        messages = dict(skipped)
        for index in items[:20]:
            run.log(f"  item {index}: {messages[index]}")
        if len(items) > 20:
            run.log(f"  ... and {len(items) - 20} more")


def validate_and_keep_best(run: RunContext, loader: DataLoader, metrics_writer, progress) -> dict[str, float]:
    """Validate, log, fire ``lgvq_validation_end``, and save ``best`` when the metric improved.

    A non-finite validation loss raises :class:`~lgvq_core.errors.NonFiniteLossError`; a finite one
    is the proof that the weights of ``best`` are good.
    """
    metrics = run.run_kind.validate(run, loader)
    run.plugin_manager.hook.lgvq_validation_end(run=run, metrics=metrics)
    if metrics_writer is not None and metrics:
        metrics_writer.write({"step": run.step, "split": "val", **metrics})
    if metrics:
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k in SHOWN)
        progress.write(f"validation @ step {run.step}: {shown}")
    guard.check_validation(metrics, run.step)  # a NaN validation loss stops the run, nothing is saved
    key = run.config.train.best_metric
    value = metrics.get(key)
    if value is not None and value < run.best_value:
        guard.check_parameters(run)
        run.best_value = value
        save(run, ["best"], metrics)
        run.best_saved_step = run.step
    elif value is None and metrics:
        progress.write(f"warning: train.best_metric {key!r} is not a validation metric ({', '.join(metrics)})")
    return metrics


def save_samples(run: RunContext, probe) -> None:
    """``samples/step-NNNNNNN.png`` (rank 0): the run kind draws them."""
    if run.is_main:
        run.run_kind.save_samples(run, probe)


@torch.no_grad()
def save_reconstruction_samples(run: RunContext, images: torch.Tensor) -> None:
    """A tokenizer run's samples: originals over reconstructions."""
    run.model.eval()
    with run.autocast():
        recon = run.model(images.to(run.device)).recon
    run.model.train()
    render = getattr(run.train_data, "render", None)  # data whose images are not RGB (label maps) draw them
    if images.shape[1] != 3 and callable(render):
        images, recon = render(images.to(run.device)), render(recon)
    save_reconstruction_grid(images, recon, run.run_dir / "samples" / f"step-{run.step:07d}.png")
