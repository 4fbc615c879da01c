"""`lgvq shards` writes WebDataset-style tar shards from any dataset; `tar-shards` trains from them and resumes exactly."""

from __future__ import annotations

import copy
import io
import tarfile
from pathlib import Path

import pytest
import torch

from lgvq_core.cli import main as lgvq_main
from lgvq_core.context import BuildContext
from lgvq_core.data.config import ShapesConfig, TarShardsConfig
from lgvq_core.data.shapes import build_shapes
from lgvq_core.data.tar_shards import TarShards
from lgvq_core.errors import DataError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file

SHAPES = {"type": "shapes", "image_size": 32, "num_train": 24, "num_val": 6}


def write_shapes_shards(tmp_path: Path) -> Path:
    config = copy.deepcopy(TINY_RUN)
    config["run"].update(output_dir=str(tmp_path / "runs"))
    config["data"] = dict(SHAPES)
    source = write_run_file(config, tmp_path / "shapes.toml")
    out = tmp_path / "shards"
    assert lgvq_main(["shards", str(source), str(out), "--samples-per-shard", "10"]) == 0
    return out


def test_shards_hold_the_source_items_ten_per_shard(tmp_path):
    out = write_shapes_shards(tmp_path)
    assert [p.name for p in sorted((out / "train").iterdir())] == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    with tarfile.open(out / "train" / "shard-000002.tar") as tar:
        assert tar.getnames() == [f"{i:06d}.{e}" for i in range(20, 24) for e in ("png", "json")]
    config = {k: v for k, v in SHAPES.items() if k != "type"}
    for split, count in (("train", 24), ("val", 6)):
        source = build_shapes(ShapesConfig(**config), BuildContext(split=split))
        shards = TarShards(TarShardsConfig(root=str(out), image_size=32), split=split)
        assert len(shards) == count
        for key in (0, count - 1, (count // 2, 12345)):
            ours, theirs = shards[key], source[key]
            assert torch.equal(ours["image"], theirs["image"]), (split, key)  # PNG is lossless
            assert ours["captions"] == theirs["captions"] and ours["caption"] == theirs["caption"]


def test_shards_into_a_folder_with_earlier_shards_are_refused_unless_overwrite(tmp_path, capsys):
    out = write_shapes_shards(tmp_path)  # 24 + 6 items
    source = tmp_path / "shapes.toml"
    smaller = ["--set", "data.num_train=12", "--set", "data.num_val=4"]
    capsys.readouterr()
    assert lgvq_main(["shards", str(source), str(out), *smaller]) == 2
    err = capsys.readouterr().err
    assert f"OUT: {out} is not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert len(TarShards(TarShardsConfig(root=str(out), image_size=32), split="train")) == 24  # untouched

    assert lgvq_main(["shards", str(source), str(out), *smaller, "--overwrite"]) == 0
    assert len(TarShards(TarShardsConfig(root=str(out), image_size=32), split="train")) == 12  # no old shard left
    assert len(TarShards(TarShardsConfig(root=str(out), image_size=32), split="val")) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".shards")) == []  # nothing left aside


def test_shards_into_a_path_that_is_a_file_are_refused(tmp_path, capsys):
    config = copy.deepcopy(TINY_RUN)
    config["data"] = dict(SHAPES)
    source = write_run_file(config, tmp_path / "shapes.toml")
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert lgvq_main(["shards", str(source), str(taken)]) == 2
    assert f"OUT: {taken} is a file" in capsys.readouterr().err and taken.read_text() == "keep me"


def test_a_tar_member_that_climbs_out_of_the_shard_is_refused(tmp_path):
    folder = tmp_path / "bad" / "train"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "shard-000000.tar", mode="w") as tar:
        for name, data in (("../../evil.png", b"x"), ("../../evil.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"shard-000000\.tar: the tar member '\.\./\.\./evil\.png' climbs out"):
        TarShards(TarShardsConfig(root=str(tmp_path / "bad")), split="train")


def test_a_sample_without_captions_names_the_shard_and_the_key(tmp_path):
    folder = tmp_path / "bad" / "train"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "shard-000000.tar", mode="w") as tar:
        info = tarfile.TarInfo("a/000007.png")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match=r"sample 'a/000007' has no captions \(\.json\)"):
        TarShards(TarShardsConfig(root=str(tmp_path / "bad")), split="train")


def shard_run(tmp_path: Path, shards: Path, name: str) -> Path:
    """The tiny run on the shards: 24 items, batch 4, so an epoch is 6 steps; random crops and flips."""
    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name=name, output_dir=str(tmp_path / "runs"))
    config["data"] = {
        "type": "tar-shards",
        "root": str(shards),
        "image_size": 24,
        "train_transform": "resize-random-crop-flip",
    }
    config["train"].update(max_steps=8, val_every=8, checkpoint_every=8, num_workers=0)
    return write_run_file(config, tmp_path / f"{name}.toml")


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["split"] == "train"}


@pytest.mark.slow
def test_training_from_shards_resumed_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    shards = write_shapes_shards(tmp_path)
    straight = train(load_run_file(shard_run(tmp_path, shards, "straight")))
    expected = train_losses(straight.run_dir)
    first = train(load_run_file(shard_run(tmp_path, shards, "resumed"), overrides=["train.max_steps=3"]))
    assert first.step == 3  # half way through the first epoch
    resumed = train(
        load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=8", "train.num_workers=2"]),
        resume_dir=first.run_dir,
    )
    assert resumed.step == 8
    got = train_losses(first.run_dir)
    assert sorted(got) == list(range(1, 9))
    for step in range(4, 9):  # the rest of epoch 1 and into epoch 2, read by two loader workers
        assert got[step] == expected[step], step
