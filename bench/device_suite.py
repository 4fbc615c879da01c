"""Every accelerator check in one command, for the few minutes a GPU machine is available.

Runs, each as a subprocess with its own time limit, writing ``OUT/<check>.log`` and one
``OUT/summary.json`` (updated after every check, so an interrupted suite keeps what it measured):

1. ``environment``: torch, CUDA, the device's name, bf16 support, the number of GPUs;
2. ``gpu-compare``: the GPU rung, ``bench/gpu_compare.py`` (``lgvq compare examples/gpu/compare.toml``:
   LG-VQ against its baseline one size up, ``--compare-seeds`` seeds, three runs sharing the GPU;
   run the suite again with the same ``--out`` and the comparison goes on where it stopped);
   ``lgvq-run``: ``lgvq run`` of the paper's CelebA-HQ VQ-GAN + LG preset on synthetic captioned
   shapes (a random CLIP ViT-B/32 text tower, LPIPS off) in bf16, then its evaluation;
3. ``train-step``: ``bench/train_step.py`` at the paper size with the bf16, channels_last and
   compile levers (and the official code with ``--official PATH``);
4. ``lg-overhead``: ``bench/lg_overhead.py`` at the paper size;
5. ``quantizer``: ``bench/quantizer.py``;
6. ``nccl-ddp``: with two or more GPUs, ``torchrun --nproc_per_node N lgvq run`` of the same run
   file (NCCL), a few steps.

    python bench/device_suite.py --out "$OUT" [--official PATH] [--budget 540]
    python bench/device_suite.py --out /tmp/suite --device cpu --quick   # the same checks, tiny, on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "device": device, "cuda": torch.version.cuda}
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(
            name=torch.cuda.get_device_name(0),
            gpus=torch.cuda.device_count(),
            bf16=torch.cuda.is_bf16_supported(),
            memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    else:
        info.update(gpus=0, cpu_threads=torch.get_num_threads())
    info["lscpu"] = _command_output(["lscpu"])  # the CPU model of every figure (AMD and Intel CPUs differ)
    info["nvidia_smi"] = _command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"])
    return info


def _command_output(command: list[str]) -> str:
    """What ``command`` prints, or why it could not run (not installed, failed)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    if done.returncode != 0:
        return f"unavailable: exit {done.returncode}: {done.stderr.strip()[:200]}"
    return done.stdout.strip()


def write_run_file(out: Path, args: argparse.Namespace) -> Path:
    """The paper preset as ``bench/train_step.py`` runs it, as an ordinary run file for ``lgvq run``."""
    from train_step import DEFAULT_PRESET, bench_table

    from lgvq_core.testing.fixtures import write_run_file as write_toml

    options = argparse.Namespace(
        device=args.device,
        workdir=str(out / "runs"),
        image_size=args.image_size,
        batch=args.batch,
        workers=args.workers,
    )
    table = bench_table(DEFAULT_PRESET, options)
    table["run"].update(name="device-suite", precision=args.precision, log_every=max(1, args.steps // 10))
    table["train"].update(
        max_steps=args.steps,
        val_every=args.steps,
        checkpoint_every=args.steps,
        sample_every=args.steps,
        val_batches=2,
    )
    table["tasks"] = [{"type": "reconstruction", "metrics": ["psnr", "ssim", "usage"]}]
    return write_toml(table, out / "device-suite.toml")


def run_check(name: str, command: list[str], out: Path, limit: float, summary: dict[str, Any]) -> None:
    """Run one check with a time limit; record its exit status, time and the last JSON line it printed."""
    log = out / f"{name}.log"
    if limit < 20:
        summary[name] = {"skipped": f"{limit:.0f} s left of the budget"}
        return
    print(f"[{name}] {' '.join(command)}  (limit {limit:.0f} s)", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w", encoding="utf-8") as stream:
        # its own process group: at the time limit the check's worker processes go with it
        process = subprocess.Popen(
            command, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        try:
            status: Any = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = "timeout"
    record: dict[str, Any] = {"status": status, "seconds": round(time.perf_counter() - start, 1), "log": log.name}
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                record["result"] = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    summary[name] = record
    print(f"[{name}] {status} after {record['seconds']} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the logs and summary.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--official", type=Path, default=None, help="local clone of the official LG-VQ code")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole suite")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (to try the suite anywhere)")
    parser.add_argument("--compare-seeds", type=int, default=2, help="seeds of the gpu-compare check (default 2)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    args.image_size = 64 if quick else 256
    args.batch = 2 if quick else 8
    args.steps = 4 if quick else 300
    args.workers = 0 if quick else 4
    args.precision = "bf16"
    deadline = time.perf_counter() + args.budget
    summary: dict[str, Any] = {"environment": environment(args.device)}
    summary_file = args.out / "summary.json"

    def left(share: float) -> float:
        """A share of the remaining budget (the last check gets all that is left)."""
        return max(0.0, (deadline - time.perf_counter()) * share)

    def save() -> None:
        summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    save()
    python = sys.executable
    run_file = write_run_file(args.out, args)
    rung = [python, str(HERE / "gpu_compare.py"), "--out", str(args.out / "gpu-compare"), "--device", args.device]
    rung += ["--seeds", "1" if quick else str(args.compare_seeds), "--jobs", "1" if quick else "3"]
    run_check("gpu-compare", rung + (["--tiny"] if quick else []), args.out, left(0.55), summary)
    save()
    run_check("lgvq-run", [python, "-m", "lgvq_core.cli", "run", str(run_file)], args.out, left(0.35), summary)
    save()
    step = [python, str(HERE / "train_step.py"), "--device", args.device, "--image-size", str(args.image_size)]
    step += ["--batch", str(args.batch), "--repeats", "2" if quick else "5", "--warmup", "1"]
    step += ["--levers", "bf16,channels_last,bf16+channels_last" + ("" if quick else ",compile")]
    if args.official is not None and not quick:
        step += ["--official", str(args.official)]
    run_check("train-step", step, args.out, left(0.45), summary)
    save()
    overhead = [python, str(HERE / "lg_overhead.py"), "--device", args.device]
    overhead += [
        "--image-size",
        str(args.image_size),
        "--ch",
        "32" if quick else "128",
        "--batch-size",
        str(args.batch),
    ]
    overhead += ["--steps", "3" if quick else "20", "--warmup", "1" if quick else "3"]
    run_check("lg-overhead", overhead, args.out, left(0.4), summary)
    save()
    quantizer = [python, str(HERE / "quantizer.py"), "--device", args.device, "--repeats", "5" if quick else "30"]
    run_check("quantizer", quantizer, args.out, left(0.5), summary)
    save()
    gpus = summary["environment"].get("gpus", 0)
    if gpus >= 2:
        ddp = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
        ddp += ["-m", "lgvq_core.cli", "run", str(run_file), "--set", "train.max_steps=20", "--set", "run.name=nccl"]
        run_check("nccl-ddp", ddp, args.out, left(1.0), summary)
    else:
        summary["nccl-ddp"] = {"skipped": f"{gpus} GPU(s) visible; NCCL DDP needs two or more"}
    save()
    failed = [
        name for name, record in summary.items() if isinstance(record, dict) and record.get("status") not in (0, None)
    ]
    print(json.dumps({"summary": str(summary_file), "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
