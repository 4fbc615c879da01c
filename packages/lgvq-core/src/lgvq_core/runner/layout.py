"""``run.channels_last = "auto"``: the memory layout chosen by timing the run's own tokenizer both ways.

Whether channels-last convolutions are faster depends on the device (on one AMD EPYC a step took
0.84x as long, on an Intel Xeon 1.44x as long), so ``"auto"`` measures instead of assuming: on
rank 0, copies of the built tokenizer run a few forward + backward passes on a batch of the run's
image shape in each layout, interleaved, under the run's precision; the faster layout wins when it
is at least :data:`MARGIN` faster (a tie keeps the default layout). The decision is logged and cached
per device model, torch version, thread count and model shape in ``<cache root>/layout-choices.json``
(``$LGVQ_CACHE_DIR``, else ``~/.cache/lgvq``), so the next run of the same shape on the same kind of
machine starts without measuring. The run's own modules, its random state and its data are not
touched. ``true`` / ``false`` force a layout without measuring. ``resolved.toml`` records the
layout taken, so that a resume continues in it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgvq_core.atomic import write_json_atomic
from lgvq_core.runner.rundir import cpu_model
from lgvq_core.text_feature_cache import cache_root

#: The cache file under the cache root.
CACHE_FILE = "layout-choices.json"
#: channels-last is taken only when its step is at least this much shorter (timing noise otherwise decides).
MARGIN = 0.03
#: Timed forward + backward passes per layout (after one untimed warm-up pass each).
REPEATS = 3


def device_model(device: torch.device) -> str:
    """The name of the device's model: the GPU's name, else the CPU's (``lscpu``'s "Model name")."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def model_signature(modules: list[nn.Module], image_shape: tuple[int, ...], precision: str) -> str:
    """A short hash of what decides the timing: module types, parameter and buffer shapes, the batch, the precision."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(type(module).__qualname__.encode())
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    digest.update(f"{tuple(image_shape)}|{precision}".encode())
    return digest.hexdigest()[:16]


def cache_key(device: torch.device, signature: str) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"{device_model(device)} | torch {torch.__version__} | {threads} threads | model {signature}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layouts(
    tokenizer: nn.Module,
    images: torch.Tensor,
    autocast: Callable[[], Any],
    timer: Callable[[], float] = time.perf_counter,
    repeats: int = REPEATS,
) -> dict[bool, float]:
    """The shortest forward + backward time of copies of ``tokenizer`` in each layout (``True``: channels-last).

    The copies are trained on nothing (no optimizer step); the global random state is restored after.
    """
    device = images.device
    copies = {False: copy.deepcopy(tokenizer).train(), True: copy.deepcopy(tokenizer).train()}
    copies[True].to(memory_format=torch.channels_last)
    inputs = {False: images.contiguous(), True: images.contiguous(memory_format=torch.channels_last)}

    def step(channels_last: bool) -> None:
        model = copies[channels_last]
        with autocast():
            output = model(inputs[channels_last])
            loss = (output.recon.float() - inputs[channels_last].float()).abs().mean() + output.quantizer_loss.float()
        loss.backward()
        model.zero_grad(set_to_none=True)

    times: dict[bool, list[float]] = {False: [], True: []}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for channels_last in (False, True):
            step(channels_last)  # warm-up: allocations, kernel selection, a k-means initialisation
        for _ in range(repeats):
            for channels_last in (False, True):  # interleaved: a change of load hits both
                _synchronize(device)
                started = timer()
                step(channels_last)
                _synchronize(device)
                times[channels_last].append(timer() - started)
    return {layout: min(values) for layout, values in times.items()}


def decide(times: dict[bool, float]) -> bool:
    """channels-last when its step is at least :data:`MARGIN` shorter."""
    return times[True] < times[False] * (1.0 - MARGIN)


def choose_channels_last(
    tokenizer: nn.Module,
    discriminator: nn.Module | None,
    images: torch.Tensor,
    precision: str,
    autocast: Callable[[], Any],
    log: Callable[[str], None],
    timer: Callable[[], float] = time.perf_counter,
    cache_dir: Path | None = None,
) -> bool:
    """``run.channels_last = "auto"``: the cached decision for this device and model shape, else a measured one."""
    device = images.device
    modules = [m for m in (tokenizer, discriminator) if m is not None]
    key = cache_key(device, model_signature(modules, tuple(images.shape), precision))
    path = (cache_dir if cache_dir is not None else cache_root()) / CACHE_FILE
    cached = _read_cache(path).get(key)
    if isinstance(cached, dict) and isinstance(cached.get("channels_last"), bool):
        chosen = cached["channels_last"]
        log(
            f'run.channels_last = "auto": {"channels-last" if chosen else "contiguous"} layout, as measured for '
            f"this device and model shape on {cached.get('measured', '?')} ({path})"
        )
        return chosen
    times = time_layouts(tokenizer, images, autocast, timer)
    chosen = decide(times)
    ratio = times[True] / times[False] if times[False] > 0 else float("nan")
    log(
        f'run.channels_last = "auto": {"channels-last" if chosen else "contiguous"} layout (a forward + backward '
        f"pass took {times[False] * 1e3:.1f} ms contiguous, {times[True] * 1e3:.1f} ms channels-last: {ratio:.2f}x, "
        f"on {device_model(device)}); cached in {path}"
    )
    record = {
        "channels_last": chosen,
        "contiguous_ms": round(times[False] * 1e3, 3),
        "channels_last_ms": round(times[True] * 1e3, 3),
        "measured": time.strftime("%Y-%m-%d"),
    }
    with contextlib.suppress(OSError):  # a cache that cannot be written only means measuring again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = record
        write_json_atomic(path, data)
    return chosen


def probe_images(train_data: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """Random images in [-1, 1] of the run's batch shape (the first training item's channels and size)."""
    item = train_data[0]
    image = item.get("image") if isinstance(item, dict) else None
    if not isinstance(image, torch.Tensor):
        raise ValueError("the dataset's first item has no image tensor to size the layout measurement")
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, *image.shape)
    return (torch.rand(shape, generator=generator) * 2 - 1).to(device)


__all__ = ["CACHE_FILE", "choose_channels_last", "decide", "device_model", "model_signature", "time_layouts"]
