"""Generative downstream models through the runner: training, `lgvq sample`, `generation-fid`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_downstream_runs import downstream_file, train_records

from lgvq_core.errors import ConfigError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train

GPT = {"type": "code-gpt", "layers": 1, "heads": 2, "width": 16}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "condition",
    [
        {"condition": "unconditional"},
        {"condition": "semantic", "condition_vocab": 6},
        {"condition": "text"},
    ],
    ids=["unconditional", "semantic", "text"],
)
def test_code_gpt_trains_on_cached_codes_under_each_condition(tmp_path, tokenizer_run, condition):
    path = downstream_file(tmp_path, tokenizer_run, downstream={**GPT, **condition}, train={"max_steps": 3})
    result = train(load_run_file(path))
    records = train_records(result.run_dir)
    assert sorted(records) == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["bits_per_code"] > 0 for r in records.values())
    assert (result.run_dir / "samples" / "step-0000003.png").is_file()  # images drawn from the model


def test_text_to_image_resumes_exactly(tmp_path, tokenizer_run):
    model = {"type": "text-to-image", "layers": 1, "heads": 2, "width": 16, "steps": 10, "sample_steps": 5}
    straight = train(load_run_file(downstream_file(tmp_path, tokenizer_run, name="straight", downstream=model)))
    expected = train_records(straight.run_dir)
    path = downstream_file(tmp_path, tokenizer_run, name="resumed", downstream=model, train={"max_steps": 3})
    first = train(load_run_file(path))
    train(load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=6"]), resume_dir=first.run_dir)
    got = train_records(first.run_dir)
    # the first leg drew samples at its last step (eval mode, own generator): the training RNG is untouched
    assert (first.run_dir / "samples" / "step-0000003.png").is_file()
    for step in (4, 5, 6):
        assert got[step]["loss"] == expected[step]["loss"], step


def test_more_sampling_steps_than_diffusion_steps_is_a_check_error(tmp_path, tokenizer_run):
    model = {"type": "text-to-image", "layers": 1, "heads": 2, "width": 16, "steps": 10, "sample_steps": 25}
    with pytest.raises(ConfigError) as info:
        load_run_file(downstream_file(tmp_path, tokenizer_run, downstream=model))
    assert "$.downstream.sample_steps: must be between 1 and steps (T = 10), got 25" in info.value.problems


def test_a_semantic_grid_with_fewer_tokens_than_label_classes_is_refused_by_check(tmp_path, tokenizer_run):
    path = downstream_file(tmp_path, tokenizer_run, downstream={**GPT, "condition": "semantic", "condition_vocab": 4})
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert "$.downstream.condition_vocab: 4 condition tokens for label maps of 6 classes; set it to 6" in (
        info.value.problems
    )


def test_a_semantic_condition_on_a_dataset_without_label_maps_is_refused_by_check(tmp_path, tokenizer_run):
    folder = tmp_path / "images"
    folder.mkdir()
    path = downstream_file(
        tmp_path,
        tokenizer_run,
        downstream={**GPT, "condition": "semantic", "condition_vocab": 6},
        data={"type": "image-text-folder", "root": str(folder), "val_fraction": 0.5},
    )
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    assert any(
        p.startswith("$.data.type: dataset 'image-text-folder' has no 'segmentation' annotations") and "shapes" in p
        for p in info.value.problems
    )


@pytest.fixture(scope="module")
def completion_run(tmp_path_factory, tokenizer_run) -> Path:
    root = tmp_path_factory.mktemp("completion")
    path = downstream_file(root, tokenizer_run, downstream={**GPT, "condition": "completion"}, train={"max_steps": 2})
    return train(load_run_file(path)).run_dir


def test_lgvq_sample_writes_images_a_grid_and_everything_that_decided_them(tmp_path, completion_run):
    out = tmp_path / "samples"
    done = cli("sample", str(completion_run), "-n", "3", "--top-k", "5", "--seed", "7", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert (out / "grid.png").is_file()
    record = json.loads((out / "sample.json").read_text())
    assert record["samples"] == 3 and record["seed"] == 7 and record["condition"] == "completion"
    assert record["completion_fraction"] == 0.5 and record["batch_size"] == 16 and "captions" not in record
    assert record["sampling"] == {"temperature": 1.0, "top_k": 5, "top_p": None, "guidance_scale": 1.0}
    assert len(record["tokenizer"]["sha256"]) == 64


def test_the_same_seed_samples_the_same_images(tmp_path, completion_run):
    for name in ("a", "b"):
        assert (
            cli("sample", str(completion_run), "-n", "2", "--out", str(tmp_path / name), cwd=tmp_path).returncode == 0
        )
    assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "argument -n: must be at least 1, got 0"),
        (["-n", "2", "--steps", "5"], "code-gpt: no sampling option steps"),
        (["--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["--top-k", "-3"], "argument --top-k: must be at least 1, got -3"),
        (["--top-k", "2.5"], "argument --top-k: '2.5' is not a whole number"),
        (["--temperature", "0"], "argument --temperature: must be above 0, got 0"),
        (["--temperature", "-1"], "argument --temperature: must be above 0, got -1"),
        (["--temperature", "nan"], "argument --temperature: must be a finite number, got nan"),
        (["--temperature", "inf"], "argument --temperature: must be a finite number, got inf"),
        (["--top-p", "0"], "argument --top-p: must be above 0, got 0"),
        (["--top-p", "1.5"], "argument --top-p: must be at most 1, got 1.5"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--seed", str(2**70)], "argument --seed: must be at most 9.22337e+18"),
        (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["-n", "2", "--caption", "a red circle"], "--caption: this code-gpt model is not conditioned on text"),
    ],
)
def test_lgvq_sample_refuses_bad_requests_and_writes_nothing(tmp_path, completion_run, args, message):
    out = tmp_path / "never"
    done = cli("sample", str(completion_run), *args, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert not out.exists()


def test_lgvq_sample_refuses_an_out_that_is_a_file(tmp_path, completion_run):
    out = tmp_path / "taken"
    out.write_text("keep me")
    done = cli("sample", str(completion_run), "-n", "2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2 and f"--out: {out} is a file" in done.stderr and "Traceback" not in done.stderr
    assert out.read_text() == "keep me"


def test_lgvq_sample_refuses_a_count_the_disk_cannot_hold_after_one_batch(tmp_path, completion_run):
    # a billion samples were all held in memory and nothing was written; now images are written as
    # drawn, and the size of the first batch's files tells whether the rest can fit
    out = tmp_path / "huge"
    done = cli("sample", str(completion_run), "-n", str(10**9), "--batch-size", "2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "-n: 1000000000 images of about" in done.stderr and "lower -n or give --out on a larger disk" in done.stderr
    assert list((out / "images").iterdir()) == [] and not (out / "sample.json").exists()


def test_lgvq_sample_writes_every_image_and_a_grid_of_the_first_ones(tmp_path, completion_run, monkeypatch):
    from lgvq_core.runner import downstream_run, generate

    monkeypatch.setattr(generate, "GRID_IMAGES", 4)
    out = tmp_path / "many"
    run = downstream_run.load_downstream_run(completion_run)
    record = generate.sample_record(run, 7, 0, {})
    written = generate.write_samples(generate.iter_generated(run, 7, 0, {}, batch_size=3), 7, out, record)
    assert written == 7 and len(list((out / "images").iterdir())) == 7
    assert json.loads((out / "sample.json").read_text())["grid"] == "images 0..3"
    again, _ = generate.generate_images(run, 7, 0, {}, batch_size=3)  # the same draws, held in memory
    last = torch.from_numpy(np.array(Image.open(out / "images" / "00006.png"))).permute(2, 0, 1)
    assert torch.equal(last, again[6].add(1).mul(127.5).round().clamp(0, 255).byte())


def test_lgvq_sample_refuses_a_tokenizer_run(tmp_path, tokenizer_run):
    done = cli("sample", str(tokenizer_run), "-n", "2", cwd=tmp_path)
    assert done.returncode == 1 and "needs a downstream run" in done.stderr


def test_generation_fid_at_the_end_of_a_run_equals_lgvq_eval(tmp_path, tokenizer_run):
    task = {"type": "generation-fid", "samples": 4, "reference_images": 4, "batch_size": 4, "save_images": 4}
    path = downstream_file(
        tmp_path, tokenizer_run, downstream={**GPT, "condition": "unconditional"}, train={"max_steps": 2}, tasks=[task]
    )
    result = train(load_run_file(path))
    at_end = json.loads((result.run_dir / "eval" / "generation-fid.json").read_text())["metrics"]
    assert math.isfinite(at_end["fid"]) and at_end["fid"] > 0
    assert at_end["samples"] == 4 and at_end["reference"] == {"split": "val", "dataset": "shapes", "images": 4}
    assert at_end["sampling"]["temperature"] == 1.0 and at_end["seed"] == 0
    assert (result.run_dir / "eval" / "generation-fid" / "grid.png").is_file()
    attributes = at_end["attributes"]  # shapes has attributes: the samples' codes are compared with val's
    assert set(attributes["tv_distance"]) >= {"count", "background", "largest_position", "has_red", "has_circle"}
    assert all(0.0 <= d <= 1.0 for d in attributes["tv_distance"].values())
    mean = sum(attributes["tv_distance"].values()) / len(attributes["tv_distance"])
    assert attributes["tv_mean"] == pytest.approx(mean) and at_end["better"]["attributes.tv_mean"] == "lower"
    assert set(attributes["probe_val_accuracy"]) == set(attributes["tv_distance"])
    # what the number lies between: two halves of the validation images, and one grey mean image
    assert at_end["floor"]["what"] == "validation images, one half against the other (2 vs 2)"
    assert at_end["ceiling"]["what"] == "the mean of 4 training images against the validation images"
    assert 0 <= at_end["floor"]["fid"] and at_end["ceiling"]["fid"] > 0
    done = cli("eval", str(result.run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = json.loads((result.run_dir / "eval" / "generation-fid.json").read_text())["metrics"]
    assert again["fid"] == pytest.approx(at_end["fid"], rel=1e-9)
    assert again["attributes"]["tv_distance"] == at_end["attributes"]["tv_distance"]  # seeded: repeats exactly
    assert again["floor"] == at_end["floor"] and again["ceiling"] == at_end["ceiling"]
    assert "is biased upwards; compare it only with FIDs from the same numbers" in done.stdout


def test_generation_fid_refuses_a_tokenizer_run(tmp_path, tokenizer_run):
    done = cli("eval", str(tokenizer_run), "--tasks", "generation-fid", cwd=tmp_path)
    assert done.returncode == 1 and "generation-fid: scores the samples of a downstream model" in done.stderr


# ------------------------------------------------------------------------------------------
# conditions beside samples
# ------------------------------------------------------------------------------------------
def _cells(grid: np.ndarray, size: int, scale: int, panels: int):
    """The panels of the first cell of a condition grid: a list of ``panels`` arrays (size*scale)²×3."""
    side = size * scale
    return [grid[2 + j * (side + 2) : 2 + j * (side + 2) + side, 2 : 2 + side] for j in range(panels)]


def test_a_completion_grid_shows_the_original_and_the_given_half_above_each_sample(tmp_path, completion_run):
    out = tmp_path / "samples"
    done = cli("sample", str(completion_run), "-n", "4", "--seed", "3", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    grid = np.array(Image.open(out / "grid.png"))
    assert grid.shape == (2 + 2 * (3 * 34), 2 + 2 * 34, 3)  # 2x2 cells, each 3 panels of 32 px + 2 px gaps
    original, given, sample = _cells(grid, 32, 1, 3)
    assert np.array_equal(given[:16], original[:16])  # the first half of the raster (rows 0-3 of 8x8 codes)
    assert np.all(given[16:] == 128)  # the rest greyed out
    assert np.array_equal(sample, np.array(Image.open(out / "images" / "00000.png")))
    assert not np.all(original[16:] == 128)


def test_a_semantic_grid_shows_the_label_map_in_the_palette(tmp_path, tokenizer_run):
    from lgvq_core.runner.generate import PALETTE

    model = {**GPT, "condition": "semantic", "condition_vocab": 6}
    path = downstream_file(tmp_path, tokenizer_run, downstream=model, train={"max_steps": 1, "val_every": 1})
    result = train(load_run_file(path))
    grid = np.array(Image.open(result.run_dir / "samples" / "step-0000001.png"))
    _, labels, _ = _cells(grid, 32, 1, 3)
    colours = {tuple(c) for c in labels.reshape(-1, 3)}
    assert colours <= set(PALETTE[:6]) and len(colours) >= 2  # background and at least one shape


def test_a_text_grid_writes_each_caption_under_its_sample(tmp_path, tokenizer_run):
    model = {**GPT, "condition": "text"}
    path = downstream_file(tmp_path, tokenizer_run, downstream=model, train={"max_steps": 1, "val_every": 1})
    result = train(load_run_file(path))
    out = tmp_path / "samples"
    caption = "a red circle above a blue square"
    done = cli(
        "sample",
        str(result.run_dir),
        "-n",
        "2",
        "--caption",
        caption,
        "--guidance",
        "2",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "sample.json").read_text())["sampling"]["guidance_scale"] == 2.0
    grid = np.array(Image.open(out / "grid.png"))
    scale = 4  # 32 px cells are drawn 128 px wide so that the caption fits
    (sample,) = _cells(grid, 32, scale, 1)  # a given caption describes no validation item: no original
    image = np.array(Image.open(out / "images" / "00000.png"))
    assert np.array_equal(sample, image.repeat(scale, 0).repeat(scale, 1))
    text = grid[2 + 32 * scale + 2 : 2 + 32 * scale + 2 + 4 * 11, 2 : 2 + 32 * scale]
    dark = (text.sum(-1) < 200).sum()
    assert dark > 50  # the caption's letters, black on white
    blank = np.array(Image.open(out / "grid.png"))[-5:]  # nothing is drawn below the last caption line
    assert (blank == 255).all()
    # captions of the validation split come with the item they describe (the training-time grid)
    training = np.array(Image.open(result.run_dir / "samples" / "step-0000001.png"))
    cell = 2 * (32 * scale + 2) - 2 + 4 * 11 + 4  # two panels (the original above the sample) and the caption
    assert training.shape[:2] == (3 * (cell + 2) + 2, 3 * (32 * scale + 2) + 2)  # 8 samples in 3x3 cells
