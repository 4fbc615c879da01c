"""Semantic synthesis with the ``vq`` condition: a mask autoencoder trained as a stage-1 run, then a prior on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomli
import torch
from test_downstream_runs import downstream_file, train_records
from test_generation_runs import GPT, cli

from lgvq_core.config.describe import dumps_toml
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError, DataError
from lgvq_core.registry import get_registry
from lgvq_core.run_file import load_run_file, structure_component
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics

SHAPES = {"type": "shapes", "image_size": 32, "num_train": 24, "num_val": 8}
MASK_CODEBOOK = 16
VQ_PRIOR = {**GPT, "condition": "semantic", "semantic_source": "vq"}


def mask_run_file(root: Path, **data) -> Path:
    run = {
        "run": {"name": "masks", "seed": 2, "output_dir": str(root / "runs"), "progress": "off", "log_every": 1},
        "model": {
            "backbone": {"type": "vqvae", "hidden": 8, "residual_hidden": 4, "residual_blocks": 1, "downsample": 4},
            "quantizer": {"type": "vq", "codebook_size": MASK_CODEBOOK, "dim": 8},
        },
        "data": {"type": "segmentation-maps", "source": SHAPES, **data},
        "train": {"batch_size": 4, "max_steps": 3, "base_lr": 1e-3, "lr_scaling": "none", "val_every": 3},
    }
    path = root / "masks.toml"
    path.write_text(dumps_toml(run))
    return path


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory) -> Path:
    """A mask autoencoder (vqvae on one-hot shapes label maps), trained for three steps."""
    return train(load_run_file(mask_run_file(tmp_path_factory.mktemp("masks")))).run_dir


def build_maps(split: str = "train", **options):
    component = structure_component("dataset", {"type": "segmentation-maps", "source": SHAPES, **options})
    return get_registry().build("dataset", component, "$.data", BuildContext(split=split))


def test_an_item_is_the_one_hot_label_map_of_the_source_item_with_its_crop_and_flip():
    maps = build_maps()
    assert maps.in_channels == 6  # background + five shape kinds
    for key in (3, (3, 11)):
        image = maps[key]["image"]
        labels = maps.source.segmentation(key)
        assert image.shape == (6, 32, 32)
        assert set(image.unique().tolist()) == {-1.0, 1.0}
        assert torch.equal((image == 1).sum(0), torch.ones(32, 32, dtype=torch.long))  # one class per pixel
        assert torch.equal(image.argmax(0), labels)
    rendered = maps.render(maps[0]["image"][None])
    assert rendered.shape == (1, 3, 32, 32) and float(rendered[0, :, 0, 0].max()) == -1.0  # background: black


def test_a_label_past_the_configured_classes_is_an_error_naming_the_item():
    maps = build_maps(classes=2)
    with pytest.raises(DataError, match=r"item 0 of shapes \(train\) has labels in \[0, \d\] but data.classes is 2"):
        maps[0]


def test_segmentation_maps_of_a_dataset_without_label_maps_is_refused_by_check(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    path = mask_run_file(tmp_path)
    raw = tomli.loads(path.read_text())
    raw["data"]["source"] = {"type": "image-text-folder", "root": str(folder), "val_fraction": 0.5}
    path.write_text(dumps_toml(raw))
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert any(p.startswith("$.data.source.type: dataset 'image-text-folder' has no") for p in info.value.problems)


def test_the_mask_autoencoder_trains_as_a_stage_one_run_with_one_channel_per_class(mask_run):
    records = [r for r in read_metrics(mask_run) if r["split"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["rec_loss"]) for r in records)
    assert (mask_run / "samples").is_dir() and any((mask_run / "samples").iterdir())  # maps drawn in colour
    from lgvq_core.runner.evaluate import load_trained

    trained, _, _ = load_trained(mask_run, "last")
    first = next(m for m in trained.tokenizer.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 6
    maps = build_maps("val")
    recon = trained.tokenizer(maps[0]["image"][None]).recon
    assert recon.shape == (1, 6, 32, 32)


def test_a_vq_prior_trains_on_the_cached_mask_codes_and_resumes_exactly(tmp_path, tokenizer_run, mask_run):
    condition = {"run_dir": str(mask_run), "checkpoint": "last"}
    straight = train(
        load_run_file(
            downstream_file(
                tmp_path, tokenizer_run, name="straight", downstream=VQ_PRIOR, condition_tokenizer=condition
            )
        )
    )
    expected = train_records(straight.run_dir)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) for r in expected.values())

    path = downstream_file(
        tmp_path,
        tokenizer_run,
        name="resumed",
        downstream=VQ_PRIOR,
        condition_tokenizer=condition,
        train={"max_steps": 3},
    )
    first = train(load_run_file(path))
    train(load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=first.run_dir)
    got = train_records(first.run_dir)
    for step in (4, 5, 6):
        assert got[step]["loss"] == expected[step]["loss"], step

    resolved = tomli.loads((first.run_dir / "resolved.toml").read_text())
    recorded = resolved["condition_tokenizer"]
    assert recorded["run_dir"] == str(mask_run.resolve()) and len(recorded["sha256"]) == 64
    assert Path(recorded["checkpoint"]).name.startswith("step-")


def test_the_condition_codes_lie_in_the_mask_codebook_and_on_its_grid(tmp_path, tokenizer_run, mask_run):
    from lgvq_core.runner.downstream_run import load_downstream_run

    path = downstream_file(
        tmp_path,
        tokenizer_run,
        downstream=VQ_PRIOR,
        condition_tokenizer={"run_dir": str(mask_run), "checkpoint": "last"},
        train={"max_steps": 1},
    )
    run = load_downstream_run(train(load_run_file(path)).run_dir, "last")
    batch = run.val_data.collate([run.val_data[i] for i in range(len(run.val_data))])
    codes = batch["condition_codes"]
    assert codes.shape == (8, 8, 8)  # 8 val items, 32 / downsample 4
    assert int(codes.min()) >= 0 and int(codes.max()) < MASK_CODEBOOK
    assert run.model.layout.condition_vocab == MASK_CODEBOOK and run.model.prefix_length == 64
    # the cached codes are what the mask autoencoder gives the item's one-hot map
    from lgvq_core.runner.evaluate import load_trained

    trained, _, _ = load_trained(mask_run, "last")
    maps = build_maps("val")
    with torch.no_grad():
        direct = trained.tokenizer.quantizer(trained.tokenizer.encode(maps[5]["image"][None])).indices
    assert torch.equal(direct[0], codes[5])


def test_lgvq_sample_draws_from_a_vq_prior(tmp_path, tokenizer_run, mask_run):
    path = downstream_file(
        tmp_path,
        tokenizer_run,
        downstream=VQ_PRIOR,
        condition_tokenizer={"run_dir": str(mask_run), "checkpoint": "last"},
        train={"max_steps": 2},
    )
    run_dir = train(load_run_file(path)).run_dir
    out = tmp_path / "samples"
    done = cli("sample", str(run_dir), "-n", "3", "--top-k", "4", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((out / "images").iterdir())) == 3
    record = json.loads((out / "sample.json").read_text())
    assert record["condition"] == "semantic"
    assert record["condition_tokenizer"]["run_dir"] == str(mask_run.resolve())


def test_check_refuses_a_missing_condition_tokenizer_run(tmp_path, tokenizer_run):
    missing = tmp_path / "nowhere"
    path = downstream_file(tmp_path, tokenizer_run, downstream=VQ_PRIOR, condition_tokenizer={"run_dir": str(missing)})
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert any(
        p.startswith(f"$.condition_tokenizer.run_dir: no such run directory: {missing}; ")
        and "--set condition_tokenizer.run_dir=" in p
        for p in info.value.problems
    )


def test_check_asks_for_a_condition_tokenizer_when_the_vq_condition_has_none(tmp_path, tokenizer_run):
    with pytest.raises(ConfigError) as info:
        load_run_file(downstream_file(tmp_path, tokenizer_run, downstream=VQ_PRIOR))
    assert any(p.startswith("$.condition_tokenizer: missing: code-gpt") for p in info.value.problems)


def test_check_refuses_an_image_tokenizer_as_the_condition_tokenizer(tmp_path, tokenizer_run):
    path = downstream_file(
        tmp_path, tokenizer_run, downstream=VQ_PRIOR, condition_tokenizer={"run_dir": str(tokenizer_run)}
    )
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert any("was trained on 'shapes' images, not on label maps" in p for p in info.value.problems)


def test_check_refuses_a_condition_vocab_that_does_not_fit_the_mask_codebook(tmp_path, tokenizer_run, mask_run):
    path = downstream_file(
        tmp_path,
        tokenizer_run,
        downstream={**VQ_PRIOR, "condition_vocab": 7},
        condition_tokenizer={"run_dir": str(mask_run), "checkpoint": "last"},
    )
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert any(
        p.startswith("$.downstream.condition_vocab: 7 does not fit the condition tokenizer's codebook of 16")
        for p in info.value.problems
    )
