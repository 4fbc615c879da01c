"""One full training step of lgvq (generator with the LG losses + discriminator) against its peers.

Variants, all in one process on the same images and captions, interleaved repeat by repeat:

- ``lgvq``: the runner's own step (``run_train_step``) on a run file (default: the paper's
  CelebA-HQ VQ-GAN + LG preset), with a random CLIP ViT-B/32 text tower (``pretrained = "none"``)
  fed through the text-feature cache, the adversarial term active (``disc_start = 0``) and LPIPS
  off, so that no weights are needed;
- ``lgvq-noLG``: the same run file without ``[[alignment]]`` (what LG costs);
- ``lgvq+<lever>``: the same step with one speed option of the run file switched on
  (``bf16``: ``run.precision``; ``channels_last``: ``run.channels_last``; ``compile``:
  ``run.compile``; ``fused``: ``train.optimizer_impl``) — each lever is measured, none assumed;
- ``official`` (with ``--official PATH``, a local clone of the authors' LG-VQ repository): its
  ``VQModel.training_step`` for both optimizer passes as PyTorch Lightning 1.x runs them
  (``toggle_optimizer``, zero_grad, training_step, backward, step; per pass). The script only
  imports the clone; modules its files import but the training step never uses (Lightning,
  LPIPS's VGG download, torch_geometric, plotting) are replaced by stubs, and ``clip.load`` builds
  the same random ViT-B/32 CLIP instead of reading a checkpoint.

Per variant: the median step time and its parts (forward, backward, optimizer; the data wait of
the lgvq runner's DataLoader is timed separately and given as a share of data + step), img/s and
the memory of a step (CUDA: peak allocated; CPU: how far resident memory rose during the step). Compile time is reported separately (the first, untimed steps).
A human table, then one JSON object as the last line.

    python bench/train_step.py --image-size 256 --batch 2 --threads 2 --official /path/to/LG-VQ
    python bench/train_step.py --device cuda --batch 8 --levers bf16,channels_last,bf16+channels_last,compile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from harness import add_common_options, prepare, synchronize  # noqa: E402
from torch import nn  # noqa: E402

from lgvq_core.config.loader import parse_toml  # noqa: E402
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.batches import BatchStream  # noqa: E402
from lgvq_core.runner.components import build_run  # noqa: E402
from lgvq_core.runner.step import run_train_step  # noqa: E402
from lgvq_core.testing.fixtures import write_run_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESET = ROOT / "examples" / "paper" / "celeba-hq" / "vqgan-lg.toml"
LEVERS = {
    "bf16": ["run.precision=bf16"],
    "channels_last": ["run.channels_last=true"],
    "compile": ["run.compile=default"],
    "fused": ["train.optimizer_impl=fused"],
}


class Segments:
    """Accumulates the seconds spent inside named parts of one step (synchronising the device)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, name: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.part(name):
                return function(*args, **kwargs)

        return timed

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


# ------------------------------------------------------------------------------------------
# lgvq
# ------------------------------------------------------------------------------------------
def bench_table(preset: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The preset with what the benchmark changes: synthetic data, random CLIP, LPIPS off, GAN on."""
    table = parse_toml(preset.read_text(encoding="utf-8"))
    table["run"].update(device=args.device, precision="fp32", name="bench", output_dir=args.workdir)
    backbone = table["model"]["backbone"]
    backbone["disc_start"] = 0
    backbone["perceptual_weight"] = 0.0
    table["data"] = {
        "type": "shapes",
        "image_size": args.image_size,
        "num_train": max(64, 4 * args.batch),
        "num_val": 8,
    }
    table["train"].update(batch_size=args.batch, num_workers=args.workers, max_steps=10**6)
    if "text_encoder" in table:
        table["text_encoder"].update(type="open_clip", model="ViT-B-32", pretrained="none", context_length=30)
    table.pop("tasks", None)
    return table


def build_lgvq(table: dict[str, Any], overrides: list[str], workdir: Path, name: str):
    path = write_run_file(copy.deepcopy(table), workdir / f"{name}.toml")
    loaded = load_run_file(path, overrides=overrides)
    torch.manual_seed(0)
    run = build_run(loaded)
    if run.text_cache is not None and run.alignment is not None:
        run.text_cache.warm(sorted(set(run.train_data.all_captions())))
    return run


class LgvqVariant:
    def __init__(self, name: str, run, device: torch.device) -> None:
        self.name, self.run, self.device = name, run, device
        self.stream = BatchStream(run)
        self.segments = Segments(device)
        gen, disc = run.model_module, run.discriminator_module
        gen.forward = self.segments.wrap("forward", gen.forward)
        if disc is not None:
            disc.forward = self.segments.wrap("forward", disc.forward)
        run.text_features = self.segments.wrap("forward", run.text_features)
        for optimizer in (run.optimizers.model, run.optimizers.discriminator):
            if optimizer is not None:
                optimizer.step = self.segments.wrap("optimizer", optimizer.step)

    def images_and_captions(self) -> tuple[torch.Tensor, list[str]]:
        batch = self.stream.next()
        return batch["image"], list(batch["caption"])

    def step(self) -> dict[str, float]:
        with self.segments.part("data"):
            batch = self.stream.next()
        with self.segments.part("step"):
            run_train_step(self.run, [batch])
        self.run.step += 1
        return self.segments.take()


# ------------------------------------------------------------------------------------------
# the official code, loaded from a local clone
# ------------------------------------------------------------------------------------------
def _stub(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def load_official(path: Path, image_size: int, device: torch.device):
    """The authors' ``VQModel`` (LG_vqgan.py) at the cele_lgvqgan.yaml settings, LPIPS off, disc on."""
    if not (path / "taming" / "models" / "LG_vqgan.py").is_file():
        raise SystemExit(f"--official {path}: no taming/models/LG_vqgan.py there; give a clone of the LG-VQ repository")
    sys.path.insert(0, str(path))

    class LightningModule(nn.Module):  # the part of pl.LightningModule that training_step uses
        global_step = 0
        bench_device = torch.device("cpu")

        @property
        def device(self) -> torch.device:
            return self.bench_device

        def log(self, *args, **kwargs) -> None:
            pass

        def log_dict(self, *args, **kwargs) -> None:
            pass

    _stub("pytorch_lightning", LightningModule=LightningModule)
    _stub("torch_geometric")
    _stub("torch_geometric.data", Data=object)
    _stub("torch_geometric.nn", GCNConv=object, GATConv=object)
    _stub("taming.modules.vqvae.vis_utils")

    class NoLPIPS(nn.Module):  # perceptual_weight = 0: never called (its VGG would be downloaded)
        def forward(self, *args):
            raise RuntimeError("LPIPS is off in this benchmark")

    _stub("taming.modules.losses.lpips", LPIPS=NoLPIPS)
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        _stub("pkg_resources", packaging=types.SimpleNamespace(version=packaging.version))

    from taming.clip import clip as official_clip
    from taming.clip.model import CLIP

    def random_clip(*args, device: Any = "cpu", **kwargs):
        model = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).float().to(device)
        return model, None

    official_clip.load = random_clip
    from taming.models.LG_vqgan import VQModel

    ddconfig = dict(
        double_z=False, z_channels=256, resolution=image_size, in_channels=3, out_ch=3, ch=128,
        ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0, drop_prob=0.1,
        clip_text_truncate_len=30, mask_transformer_layer=2, mask_transformer_head=1,
    )  # fmt: skip
    lossconfig = {
        "target": "taming.modules.losses.vqperceptual_text.VQLPIPSWithDiscriminator",
        "params": dict(
            disc_conditional=False,
            disc_in_channels=3,
            disc_start=0,
            disc_weight=0.8,
            codebook_weight=1.0,
            nceloss_weight=0.001,
            mskloss_weight=0.01,
            wrsloss_weight=0.0001,
            perceptual_weight=0.0,
        ),
    }
    LightningModule.bench_device = device
    torch.manual_seed(0)
    model = VQModel(ddconfig, lossconfig, n_embed=1024, embed_dim=256).to(device)
    model.learning_rate = 4.5e-6 * 8
    return model


class OfficialVariant:
    """Both optimizer passes of one batch as PyTorch Lightning 1.x's automatic optimisation runs them."""

    def __init__(self, model, device: torch.device) -> None:
        self.name, self.model, self.device = "official", model, device
        self.optimizers, _ = model.configure_optimizers()
        self.segments = Segments(device)
        self.batch: dict[str, Any] = {}

    def set_batch(self, images: torch.Tensor, captions: list[str]) -> None:
        # the official loaders give B×H×W×C images in [-1, 1] and the caption under "text"
        self.batch = {"image": images.permute(0, 2, 3, 1).contiguous(), "text": captions}

    @contextlib.contextmanager
    def toggled(self, index: int) -> Iterator[None]:
        """``LightningModule.toggle_optimizer``: only this optimizer's parameters require grad."""
        own = {id(p) for group in self.optimizers[index].param_groups for p in group["params"]}
        others = [
            p
            for i, opt in enumerate(self.optimizers)
            if i != index
            for group in opt.param_groups
            for p in group["params"]
            if id(p) not in own
        ]
        states = [p.requires_grad for p in others]
        for p in others:
            p.requires_grad = False
        try:
            yield
        finally:
            for p, state in zip(others, states, strict=True):
                p.requires_grad = state

    def step(self) -> dict[str, float]:
        with self.segments.part("step"):
            for index, optimizer in enumerate(self.optimizers):
                with self.toggled(index):
                    optimizer.zero_grad()
                    with self.segments.part("forward"):
                        loss = self.model.training_step(self.batch, 0, index)
                    with self.segments.part("backward"):
                        loss.backward()
                    with self.segments.part("optimizer"):
                        optimizer.step()
        type(self.model).global_step += 1
        return self.segments.take()


# ------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(device: torch.device, step: Callable[[], dict]) -> tuple[dict, float | None]:
    """The step's parts and its memory peak in GiB.

    CUDA: the peak of allocated memory during the step (weights, optimizer state and activations).
    CPU (Linux): how far the process's resident memory rose above its level before the step (the
    kernel's high-water mark is reset first), i.e. activations, gradients and other transient
    buffers; ``None`` where ``/proc/self/clear_refs`` cannot be written.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        parts = step()
        return parts, torch.cuda.max_memory_allocated(device) / 2**30
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
    except OSError:
        return step(), None
    before = _status_kib("VmRSS")
    parts = step()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return parts, None
    return parts, max(0, peak - before) / 2**20


def summarise(name: str, samples: list[dict[str, float]], memory: list[float], batch: int) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(s.get(key, 0.0) for s in samples)

    step = median("step")
    forward, optimizer = median("forward"), median("optimizer")
    backward = median("backward") if any("backward" in s for s in samples) else step - forward - optimizer
    data = median("data")
    return {
        "variant": name,
        "step_s": step,
        "forward_s": forward,
        "backward_s": backward,
        "optimizer_s": optimizer,
        "data_wait_share": data / (data + step) if data else 0.0,
        "img_per_s": batch / step,
        "peak_gib": max(memory) if memory else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", type=Path, default=DEFAULT_PRESET, help="tokenizer run file (with [[alignment]])")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the lgvq runs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant (compile happens here)")
    parser.add_argument("--official", type=Path, default=None, help="local clone of the official LG-VQ code")
    parser.add_argument(
        "--levers",
        default="",
        help=f"comma list of {', '.join(LEVERS)}, or several joined with + (each one more variant)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the lgvq-noLG variant")
    add_common_options(parser, repeats=3, device="cpu")
    args = parser.parse_args()
    if args.official is not None and args.image_size != 256:
        parser.error("--official: the official code fixes the code grid at 16×16, i.e. --image-size 256")
    device = prepare(args)
    levers = [lever for lever in args.levers.split(",") if lever]
    for lever in levers:
        for part in lever.split("+"):
            if part not in LEVERS:
                parser.error(f"--levers: unknown lever {part!r}; choose from {', '.join(LEVERS)} (join with +)")

    with tempfile.TemporaryDirectory(prefix="lgvq-bench-") as tmp:
        args.workdir = tmp
        table = bench_table(args.preset, args)
        variants: list[Any] = [LgvqVariant("lgvq", build_lgvq(table, [], Path(tmp), "lgvq"), device)]
        if not args.no_baseline:
            variants.append(LgvqVariant("lgvq-noLG", build_lgvq(table, ["alignment=[]"], Path(tmp), "nolg"), device))
        for lever in levers:
            overrides = [override for part in lever.split("+") for override in LEVERS[part]]
            run = build_lgvq(table, overrides, Path(tmp), lever)
            variants.append(LgvqVariant(f"lgvq+{lever}", run, device))
        official = None
        if args.official is not None:
            official = OfficialVariant(load_official(args.official.resolve(), args.image_size, device), device)
            variants.append(official)

        samples: dict[str, list[dict]] = {v.name: [] for v in variants}
        memory: dict[str, list[float]] = {v.name: [] for v in variants}
        warmup_s: dict[str, float] = {v.name: 0.0 for v in variants}
        for repeat in range(args.warmup + args.repeats):
            if official is not None:
                official.set_batch(*variants[0].images_and_captions())
            for variant in variants:  # interleaved: drift hits every variant alike
                start = time.perf_counter()
                parts, peak = peak_memory(device, variant.step)
                if repeat < args.warmup:
                    warmup_s[variant.name] += time.perf_counter() - start
                    continue
                samples[variant.name].append(parts)
                if peak is not None:
                    memory[variant.name].append(peak)
            print(f"repeat {repeat + 1}/{args.warmup + args.repeats} done", file=sys.stderr, flush=True)

    rows = [summarise(v.name, samples[v.name], memory[v.name], args.batch) for v in variants]
    by_name = {row["variant"]: row for row in rows}
    for row in rows:
        row["warmup_s"] = warmup_s[row["variant"]]
        row["vs_lgvq"] = row["step_s"] / by_name["lgvq"]["step_s"]
        if "official" in by_name:
            row["vs_official"] = row["step_s"] / by_name["official"]["step_s"]

    header = f"{'variant':<20}{'step s':>9}{'fwd s':>8}{'bwd s':>8}{'opt s':>8}{'data %':>8}{'img/s':>8}"
    header += f"{'+GiB' if device.type != 'cuda' else 'GiB':>7}{'vs lgvq':>9}{'vs official':>13}{'warm-up s':>11}"
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, {args.image_size}², "
        f"preset {args.preset.name}, {args.repeats} repeats (median)"
    )
    print(header)
    for row in rows:
        peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
        versus = f"{row['vs_official']:.2f}×" if "vs_official" in row else "-"
        print(
            f"{row['variant']:<20}{row['step_s']:>9.3f}{row['forward_s']:>8.3f}{row['backward_s']:>8.3f}"
            f"{row['optimizer_s']:>8.3f}{100 * row['data_wait_share']:>7.1f}%{row['img_per_s']:>8.2f}"
            f"{peak:>7}{row['vs_lgvq']:>8.2f}×{versus:>13}{row['warmup_s']:>11.1f}"
        )
    record = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "image_size": args.image_size,
        "preset": str(args.preset),
        "repeats": args.repeats,
        "rows": rows,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
