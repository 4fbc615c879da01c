"""Images from a trained downstream model: ``lgvq sample`` and the ``generation-fid`` task.

Conditions come from the validation split in order (item 0, 1, ...; cycled when more samples are
asked than it has): completion prompts, label maps, captions. Every draw comes from one generator
seeded by ``seed``, so the same call gives the same images. Codes are decoded by the frozen
tokenizer the model was trained on.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lgvq_core.atomic import write_json_atomic
from lgvq_core.errors import ConfigError, LgvqError
from lgvq_core.runner.batches import to_device
from lgvq_core.runner.context import RunContext
from lgvq_core.runner.downstream import model_inputs


def check_generative(model: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The model's effective sampling options; a clear error for a model that cannot sample."""
    if not callable(getattr(model, "effective_sampling", None)):
        raise LgvqError(f"{type(model).__name__} does not generate images (it has no generate())")
    try:
        return model.effective_sampling(**{k: v for k, v in options.items() if v is not None})
    except ValueError as exc:
        raise ConfigError([f"sampling options: {exc}"]) from None


def sample_record(
    run: RunContext, count: int, seed: int, effective: dict[str, Any], captions=None, batch_size: int | None = None
) -> dict[str, Any]:
    """What decided a set of samples: count, seed, sampling options, conditions, model, tokenizer."""
    data = run.val_data
    record = {
        "samples": count,
        "seed": seed,
        "sampling": effective,
        "conditions": "given captions" if captions else f"validation split items 0..{min(count, len(data)) - 1}",
        "condition": getattr(run.config.downstream.config, "condition", run.config.downstream.type),
        "model": run.config.downstream.type,
        "checkpoint_step": run.step,
        "tokenizer": dict(run.tokenizer_identity),
    }
    if captions:
        record["captions"] = list(captions)  # cycled over the samples in order
    fraction = getattr(run.config.downstream.config, "completion_fraction", None)
    if record["condition"] == "completion" and fraction is not None:
        record["completion_fraction"] = fraction  # the share of each raster given, from the validation image
    record["batch_size"] = batch_size  # with the seed, decides the draws: one generator runs through the batches
    if run.condition_tokenizer_identity:
        record["condition_tokenizer"] = dict(run.condition_tokenizer_identity)
    return record


@torch.no_grad()
def iter_generated(
    run: RunContext,
    count: int,
    seed: int,
    options: dict[str, Any],
    batch_size: int = 16,
    captions=None,
    with_conditions: bool = False,
) -> Iterator[tuple]:
    """``(images, codes)`` per batch, in order, until ``count`` images: images ``b 3 H W`` in [-1, 1]
    and the drawn codes, both on the CPU. Only one batch is held at a time. ``with_conditions`` adds a
    third item, the batch's condition panels (:func:`condition_panels`)."""
    if count <= 0:
        raise ConfigError([f"-n: the number of samples must be positive, got {count}"])
    if batch_size <= 0:
        raise ConfigError([f"--batch-size: must be positive, got {batch_size}"])
    check_generative(run.model, options)
    data = run.val_data
    if len(data) == 0:
        raise LgvqError("the validation split is empty: there is no condition to sample from")
    generator = torch.Generator(device=run.device).manual_seed(seed)
    for start in range(0, count, batch_size):
        rows = range(start, min(start + batch_size, count))
        batch = data.collate([data[i % len(data)] for i in rows])
        if len(batch["index"]) != len(rows):
            raise LgvqError(f"validation items {[i % len(data) for i in rows]} include unreadable ones")
        if captions:
            batch["caption"] = [captions[i % len(captions)] for i in rows]
        inputs = model_inputs(run, to_device(batch, run.device))
        with run.autocast():
            codes = run.model.generate(inputs, generator=generator, **options)
            images = run.tokenizer.decode_indices(codes).float().clamp(-1, 1).cpu()
        if with_conditions:
            # given captions describe no validation item: no original beside them
            yield images, codes.cpu(), condition_panels(run, inputs, images.shape[-2:], original=not captions)
        else:
            yield images, codes.cpu()


#: Colours of label-map classes in condition panels (class c gets PALETTE[c % len(PALETTE)]), RGB.
PALETTE = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
)  # fmt: skip


@torch.no_grad()
def condition_panels(run: RunContext, batch: dict[str, Any], size, original: bool = True) -> dict[str, Any]:
    """What a batch's samples were conditioned on, as images beside them (CPU, ``b 3 H W`` in [-1, 1]).

    From the model's ``sample_conditions(batch)`` (:class:`lgvq_core.downstream.SampleConditions`):
    ``original`` (the validation item's codes, decoded), ``given`` (the original with the codes that
    were not given greyed out), ``labels`` (the label map in :data:`PALETTE`) and ``captions``. Empty
    for a model without conditions; without ``original`` when it is false and nothing needs it.
    """
    import torch.nn.functional as F

    describe = getattr(run.model, "sample_conditions", None)
    conditions = describe(batch) if callable(describe) else None
    if conditions is None or (conditions.given is None and conditions.labels is None and not conditions.captions):
        return {}
    panels: dict[str, Any] = {}
    if "codes" in batch and (original or conditions.given is not None):
        with run.autocast():
            decoded = run.tokenizer.decode_indices(batch["codes"]).float().clamp(-1, 1).cpu()
        panels["original"] = decoded
        if conditions.given is not None:
            keep = F.interpolate(conditions.given.float().cpu()[:, None], size=tuple(size), mode="nearest")
            panels["given"] = decoded * keep  # 0 is mid-grey in [-1, 1]
    if conditions.labels is not None:
        labels = conditions.labels.long().cpu()
        colours = torch.tensor(PALETTE, dtype=torch.float32).div(127.5).sub(1)  # c 3 in [-1, 1]
        painted = colours[labels % len(PALETTE)].permute(0, 3, 1, 2)  # b 3 H' W'
        panels["labels"] = F.interpolate(painted, size=tuple(size), mode="nearest")
    if conditions.captions:
        panels["captions"] = [str(c) for c in conditions.captions]
    return panels


def generate_images(
    run: RunContext,
    count: int,
    seed: int,
    options: dict[str, Any],
    batch_size: int = 16,
    captions=None,
    codes_out: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``count`` images (``n 3 H W`` in [-1, 1], on the CPU) and the record of what decided them.

    ``captions`` (text models) replaces the validation captions, cycled over the samples. The drawn
    codes of each batch are appended (on the CPU) to ``codes_out`` when it is given. Holds every image:
    for many, :func:`iter_generated` yields them batch by batch (``lgvq sample`` writes them so).
    """
    effective = check_generative(run.model, options)
    images = []
    for drawn, codes in iter_generated(run, count, seed, options, batch_size, captions):
        images.append(drawn)
        if codes_out is not None:
            codes_out.append(codes)
    return torch.cat(images), sample_record(run, count, seed, effective, captions, batch_size)


def _to_image(tensor: torch.Tensor):
    from PIL import Image

    return Image.fromarray(tensor.add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


#: Order of the condition panels above each sample in a grid.
PANEL_ORDER = ("original", "given", "labels")
#: Width a grid cell is scaled up to (nearest neighbour) when captions are written under it.
CAPTION_CELL_WIDTH = 128
#: Caption lines written under a cell at most (the rest is cut with "...").
CAPTION_LINES = 4


def save_grid(images: torch.Tensor, path: Path, panels: dict[str, Any] | None = None) -> None:
    """Images in [-1, 1] tiled into one near-square PNG; with ``panels`` (:func:`condition_panels`)
    each sample is a column of its conditions (original, given part, label map), then the sample,
    with its caption written under it."""
    from torchvision.utils import make_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = max(1, int(math.ceil(math.sqrt(len(images)))))
    if not panels:
        _to_image(make_grid(images, nrow=columns, padding=2, pad_value=1.0)).save(path)
        return
    _condition_grid(images, panels, columns).save(path)


def _condition_grid(images: torch.Tensor, panels: dict[str, Any], columns: int):
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    stacks = [panels[name] for name in PANEL_ORDER if name in panels] + [images]
    captions = panels.get("captions")
    height, width = images.shape[-2:]
    scale = max(1, math.ceil(CAPTION_CELL_WIDTH / width)) if captions else 1
    cell_width, panel_height = width * scale, height * scale
    font = ImageFont.load_default()
    chars = max(4, cell_width // 6)
    panels_height = len(stacks) * (panel_height + 2) - 2
    cell_height = panels_height + (CAPTION_LINES * 11 + 4 if captions else 0)
    rows = math.ceil(len(images) / columns)
    canvas = Image.new("RGB", (columns * (cell_width + 2) + 2, rows * (cell_height + 2) + 2), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(len(images)):
        x = 2 + (i % columns) * (cell_width + 2)
        y = 2 + (i // columns) * (cell_height + 2)
        for j, stack in enumerate(stacks):
            picture = _to_image(stack[i]).resize((cell_width, panel_height), Image.NEAREST)
            canvas.paste(picture, (x, y + j * (panel_height + 2)))
        if captions:
            lines = textwrap.wrap(captions[i], chars) or [""]
            if len(lines) > CAPTION_LINES:
                lines = [*lines[: CAPTION_LINES - 1], lines[CAPTION_LINES - 1][: chars - 3] + "..."]
            top = y + panels_height + 2
            for k, line in enumerate(lines):
                draw.text((x + 1, top + 11 * k), line, fill=(0, 0, 0), font=font)
    return canvas


def save_images(images: torch.Tensor, out_dir: Path, record: dict[str, Any]) -> None:
    """``images/NNNNN.png``, ``grid.png`` and, last, ``sample.json`` (its presence marks a complete folder)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        _to_image(image).save(out_dir / "images" / f"{i:05d}.png")
    save_grid(images, out_dir / "grid.png")
    write_json_atomic(out_dir / "sample.json", record)


#: ``lgvq sample``'s grid.png shows at most this many images (the first ones).
GRID_IMAGES = 256


def write_samples(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]], count: int, out_dir: Path, record: dict[str, Any]
) -> int:
    """Write each batch's images as it is drawn (bounded memory), then ``grid.png`` of the first
    :data:`GRID_IMAGES` and, last, ``sample.json``. After the first batch, refuses (and removes what
    it wrote) when ``count`` images of that size cannot fit the free disk space."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(count - 1)))
    written: list[Path] = []
    grid: list[torch.Tensor] = []
    grid_panels: dict[str, list] = {}
    for images, _, *rest in batches:
        if rest and rest[0] and len(grid) < GRID_IMAGES:
            room = GRID_IMAGES - len(grid)
            for name, value in rest[0].items():
                grid_panels.setdefault(name, []).extend(list(value[:room]))
        for image in images:
            path = out_dir / "images" / f"{len(written):0{width}d}.png"
            _to_image(image).save(path)
            written.append(path)
        if len(grid) < GRID_IMAGES:
            grid.extend(images[: GRID_IMAGES - len(grid)])
        if len(written) == len(images) and count > len(written):  # the first batch: will the rest fit?
            each = sum(p.stat().st_size for p in written) / len(written)
            needed, free = each * (count - len(written)), shutil.disk_usage(out_dir).free
            if needed > free:
                for path in written:
                    path.unlink()
                raise ConfigError(
                    [
                        f"-n: {count} images of about {each / 1e3:.1f} kB need about {needed / 1e9:.3g} GB more, "
                        f"but the disk holding {out_dir} has {free / 1e9:.3g} GB free; lower -n or give --out "
                        "on a larger disk"
                    ]
                )
    panels = {name: values if name == "captions" else torch.stack(values) for name, values in grid_panels.items()}
    save_grid(torch.stack(grid), out_dir / "grid.png", panels)
    record = {**record, "grid": f"images 0..{len(grid) - 1}"}
    write_json_atomic(out_dir / "sample.json", record)
    return len(written)


def generates(run: RunContext) -> bool:
    """Whether a downstream run's model draws codes (``generate`` with ``effective_sampling``)."""
    return callable(getattr(run.model, "effective_sampling", None))


@torch.no_grad()
def save_training_samples(run: RunContext, count: int = 8) -> None:
    """``samples/step-NNNNNNN.png`` of a generative downstream run: ``count`` images drawn in eval mode
    from a generator seeded by the run seed, so the training RNG is neither used nor changed."""
    was_training = run.model.training
    run.model.eval()
    try:
        check_generative(run.model, {})
        images, _, panels = next(
            iter_generated(run, count, run.config.run.seed, {}, batch_size=count, with_conditions=True)
        )
    finally:
        run.model.train(was_training)
    save_grid(images, run.run_dir / "samples" / f"step-{run.step:07d}.png", panels)
