"""``lgvq shards RUN_FILE OUT``: write any dataset of a run file as ``tar-shards`` (``OUT/train``, ``OUT/val``).

Each item becomes ``NNNNNN.png`` (its image as the dataset stores it, before any transform,
losslessly re-encoded) and ``NNNNNN.json`` (``{"captions": [...]}``, every caption as stored),
``samples_per_shard`` items per ``shard-NNNNNN.tar``. Members carry no owner, mode or time of the
machine that wrote them, so the same dataset always gives byte-identical shards. A shard is
written under a temporary name and renamed when complete: an interrupted run leaves no shard that
looks whole.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from lgvq_core.context import BuildContext
from lgvq_core.data.tar_shards import shard_name
from lgvq_core.errors import ConfigError
from lgvq_core.registry import get_registry
from lgvq_core.run_file import load_run_file


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    return info, io.BytesIO(data)


def item_members(dataset: Any, index: int) -> tuple[bytes, bytes]:
    """The PNG bytes and the caption JSON of item ``index``, untransformed."""
    image = io.BytesIO()
    dataset._load_image(index).save(image, format="PNG")
    captions = json.dumps({"captions": list(dataset._raw_captions(index))}, ensure_ascii=False)
    return image.getvalue(), captions.encode("utf-8")


def write_shards(dataset: Any, out_dir: Path, samples_per_shard: int, log=print) -> list[Path]:
    """Every item of ``dataset`` into ``out_dir/shard-*.tar``; returns the shard paths."""
    if samples_per_shard < 1:
        raise ConfigError([f"--samples-per-shard: must be at least 1, got {samples_per_shard}"])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for number, start in enumerate(range(0, len(dataset), samples_per_shard)):
        path = out_dir / shard_name(number)
        partial = path.with_suffix(".tar.partial")
        with tarfile.open(partial, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(start, min(start + samples_per_shard, len(dataset))):
                image, captions = item_members(dataset, index)
                tar.addfile(*_member(f"{index:06d}.png", image))
                tar.addfile(*_member(f"{index:06d}.json", captions))
        os.replace(partial, path)
        written.append(path)
    log(f"{out_dir}: {len(dataset)} samples in {len(written)} shard(s)")
    return written


def shards_from_cli(args: argparse.Namespace) -> int:

    out = Path(args.out)
    overwrite = bool(getattr(args, "overwrite", False))
    if out.exists() and not out.is_dir():
        raise ConfigError([f"OUT: {out} is a file; give a folder (it is created when missing)"])
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            [
                f"OUT: {out} is not empty (earlier shards would be read with the new ones); give an empty or "
                "new folder, or --overwrite to replace it once the new shards are complete"
            ]
        )
    config = load_run_file(args.file, overrides=list(args.set or [])).config
    registry = get_registry()
    target = out.with_name(f".{out.name}.partial-{os.getpid()}") if overwrite and out.is_dir() else out
    try:
        for split in ("train", "val"):
            dataset = registry.build("dataset", config.data, "$.data", BuildContext(split=split, seed=config.run.seed))
            write_shards(dataset, target / split, args.samples_per_shard)
    except BaseException:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
        raise
    if target != out:  # the old folder goes only once the new one is whole
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(target, out)
        shutil.rmtree(old, ignore_errors=True)
        print(f"replaced the earlier contents of {out}")
    print(f'read them with [data] type = "tar-shards", root = "{out}"')
    return 0
