"""code-probe: linear and MLP probes on frozen code vectors predict image attributes, beside a
shuffled-label control and the majority rate.

The probes are checked on features built to hold (or hide) an attribute; the task end to end on
``shapes`` with a tokenizer whose codes are the images' average colours on a 4×4 grid, so the
background is in the codes and a working probe must find it.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from task_doubles import ListData, id_images, trained_model
from torch import nn

from lgvq_core.context import BuildContext
from lgvq_core.data.config import ShapesConfig
from lgvq_core.data.shapes import ShapesDataset
from lgvq_core.errors import ConfigError
from lgvq_core.quantizers.base import QuantizerOutput
from lgvq_core.quantizers.vq import VectorQuantizer
from lgvq_core.registry import build
from lgvq_core.run_file import load_run_file, validate_run_file
from lgvq_core.runner.compare import table_rows
from lgvq_core.runner.loop import train
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file
from lgvq_tasks.code_probe import (
    CodeProbeTask,
    accuracy,
    attribute_tv_distance,
    code_vectors,
    fit_attribute_probe,
    majority_rate,
)
from lgvq_tasks.config import CodeProbeConfig
from lgvq_tasks.errors import TaskError


# ---------------------------------------------------------------------------------------------
# the probes, on features made to hold an attribute
# ---------------------------------------------------------------------------------------------
def block_features(labels: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """A block of 4 copies of each class's one-hot entry, plus 0.5-sigma noise and 16 noise-only columns."""
    one_hot = F.one_hot(labels, classes).float().repeat_interleave(4, dim=1)  # n (4 c)
    signal = one_hot + 0.5 * torch.randn(one_hot.shape, generator=generator)
    return torch.cat([signal, torch.randn(len(labels), 16, generator=generator)], dim=1)


def split(features: torch.Tensor, labels: torch.Tensor, train: int):
    return features[:train], {"a": labels[:train]}, features[train:], labels[train:]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_probe_reads_an_attribute_written_in_the_features(kind):
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(4, (600,), generator=generator)
    train_x, train_y, val_x, val_y = split(block_features(labels, 4, generator), labels, 400)

    probe = fit_attribute_probe(train_x, train_y, {"a": ("w", "x", "y", "z")}, kind=kind, steps=200)

    assert accuracy(probe.predict(val_x)["a"], val_y) > 0.95
    assert torch.equal(probe.mean, train_x.mean(0))  # standardised with the train features' statistics


def test_a_probe_fitted_on_shuffled_labels_scores_at_chance():
    generator = torch.Generator().manual_seed(2)
    labels = torch.multinomial(torch.tensor([0.55, 0.25, 0.2]), 800, replacement=True, generator=generator)
    train_x, train_y, val_x, val_y = split(block_features(labels, 3, generator), labels, 500)
    shuffled = {"a": train_y["a"][torch.randperm(500, generator=generator)]}

    honest = fit_attribute_probe(train_x, train_y, {"a": 3}, kind="mlp", steps=200)
    control = fit_attribute_probe(train_x, shuffled, {"a": 3}, kind="mlp", steps=200)

    # chance: from guessing by the class shares (sum of p²) up to always naming the majority class
    shares = torch.bincount(val_y, minlength=3) / len(val_y)
    guessing, majority = float((shares**2).sum()), majority_rate(val_y, 3)
    assert accuracy(honest.predict(val_x)["a"], val_y) > 0.95
    assert guessing - 0.06 < accuracy(control.predict(val_x)["a"], val_y) < majority + 0.06


def test_only_the_mlp_solves_an_xor_attribute():
    generator = torch.Generator().manual_seed(3)
    signs = torch.randint(2, (1000, 2), generator=generator) * 2 - 1  # ±1 in two columns
    labels = (signs[:, 0] * signs[:, 1] > 0).long()  # same sign: no linear function of the columns tells
    features = torch.cat(
        [signs + 0.1 * torch.randn(1000, 2, generator=generator), torch.randn(1000, 6, generator=generator)], 1
    )
    train_x, train_y, val_x, val_y = split(features, labels, 700)

    linear = fit_attribute_probe(train_x, train_y, {"a": 2}, kind="linear")
    mlp = fit_attribute_probe(train_x, train_y, {"a": 2}, kind="mlp")

    assert abs(accuracy(linear.predict(val_x)["a"], val_y) - 0.5) < 0.1
    assert accuracy(mlp.predict(val_x)["a"], val_y) > 0.9


def test_a_fit_draws_only_from_its_generator():
    features = torch.linspace(-1, 1, 64).view(32, 2)
    labels = {"a": (features[:, 0] > 0).long(), "b": torch.arange(32) % 3}
    classes = {"a": 2, "b": ("p", "q", "r")}

    def fitted(global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        probe = fit_attribute_probe(
            features,
            labels,
            classes,
            kind="mlp",
            hidden=8,
            steps=20,
            batch_size=5,
            generator=torch.Generator().manual_seed(4),
        )
        assert torch.equal(torch.get_rng_state(), state)
        return probe.logits(features)["b"]

    assert torch.equal(fitted(0), fitted(123))


def test_total_variation_distance_per_attribute_by_hand():
    a = {"colour": torch.tensor([0, 0, 1, 1]), "size": torch.tensor([0, 1, 0, 1])}
    b = {"colour": torch.tensor([0, 2, 2, 2]), "size": torch.tensor([1, 0, 1, 0, 0, 1])}
    # colour: (1/2, 1/2, 0) vs (1/4, 0, 3/4) -> (1/4 + 1/2 + 3/4) / 2; size: (1/2, 1/2) both
    assert attribute_tv_distance(a, b, {"colour": ("red", "green", "blue"), "size": 2}) == {
        "colour": pytest.approx(0.75),
        "size": pytest.approx(0.0),
    }
    assert attribute_tv_distance({"x": torch.tensor([0, 0])}, {"x": torch.tensor([1])}, {"x": 2}) == {"x": 1.0}


class TwoCodeQuantizer(nn.Module):
    """Picks two codes per position: code 2j and 2j+1 where j is the position's channel-0 value."""

    codes_per_position = 2

    def __init__(self) -> None:
        super().__init__()
        self.codebook = torch.arange(12.0).view(6, 2)  # code k = (2k, 2k + 1)

    def forward(self, z: torch.Tensor):
        j = z[:, 0].long()  # b h w
        return QuantizerOutput(quant=z, indices=torch.stack([2 * j, 2 * j + 1], dim=1), loss=z.new_zeros(()))  # b 2 h w


def test_code_vectors_flatten_every_code_of_every_position():
    tokenizer = nn.Module()
    tokenizer.quantizer = TwoCodeQuantizer()
    tokenizer.encode = lambda images: images
    images = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 0.0]]]])  # b=2, D=1, 1×2 positions

    vectors = code_vectors(tokenizer, images)

    # image 0: slot 0 holds codes 0, 2 and slot 1 codes 1, 3 (b k h w D, flattened)
    assert vectors.tolist() == [[0, 1, 4, 5, 2, 3, 6, 7], [8, 9, 0, 1, 10, 11, 2, 3]]


# ---------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------
class ColourGridTokenizer(nn.Module):
    """Codes are each 8×8 cell's mean colour, snapped to 27 levels ({-1, 0, 1}³) by a real ``vq``."""

    def __init__(self) -> None:
        super().__init__()
        self.quantizer = VectorQuantizer(codebook_size=27, dim=3)
        levels = torch.tensor([-1.0, 0.0, 1.0])
        grid = torch.cartesian_prod(levels, levels, levels)  # 27 3
        with torch.no_grad():
            self.quantizer.embedding.weight.copy_(grid)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, 8)  # b 3 4 4 for 32 px images


def shapes_model(batch_size: int = 64):
    config = ShapesConfig(image_size=32, num_train=256, num_val=64, seed=5)
    model = trained_model(ColourGridTokenizer().eval(), batch_size=batch_size)
    model.train_data = ShapesDataset(config, split="train")
    return model, ShapesDataset(config, split="val")


def test_the_task_end_to_end_on_shapes(tmp_path, capsys):
    model, val = shapes_model()
    task = CodeProbeTask(CodeProbeConfig(train_images=200, steps=60))

    assert task.requires(model) is None
    torch.manual_seed(11)
    state = torch.get_rng_state()
    results = task.run(model, val, tmp_path)
    assert torch.equal(torch.get_rng_state(), state)  # evaluation leaves the training RNG alone
    torch.manual_seed(12)
    again = task.run(model, val, tmp_path)

    assert again == results  # the same seed repeats exactly, whatever the global RNG
    names = list(val.attribute_classes())
    assert list(results["attributes"]) == names
    for name, row in results["attributes"].items():
        assert set(row) == {"linear", "mlp", "shuffled_labels", "majority", "classes"}
        assert row["classes"] == list(val.attribute_classes()[name])
        assert all(0.0 <= row[key] <= 1.0 for key in ("linear", "mlp", "shuffled_labels", "majority"))
    for key, row in [("linear_mean", "linear"), ("mlp_mean", "mlp"), ("shuffled_mean", "shuffled_labels")]:
        assert results[key] == pytest.approx(sum(r[row] for r in results["attributes"].values()) / len(names))
    assert results["train_images"] == 200 and results["val_images"] == 64 and results["features"] == 3 * 4 * 4
    assert results["steps"] == 60 and results["seed"] == 0 and results["control_probe"] == "mlp"
    background = results["attributes"]["background"]
    assert background["linear"] > 0.9 and background["mlp"] > 0.9  # the codes hold it
    assert results["shuffled_mean"] < results["majority_mean"] + 0.05  # without the image: chance
    assert results["better"]["linear_mean"] == results["better"]["attributes.background.mlp"] == "higher"
    assert not any("shuffled" in key or "majority" in key for key in results["better"])
    json.dumps(results)
    out = capsys.readouterr().out
    assert "code-probe: encoding 200 of 256 train images" in out
    assert "code-probe: linear probe step 60/60" in out and "code-probe: background (3 classes): linear" in out


def test_another_seed_draws_another_subset_and_options_narrow_the_work(tmp_path):
    model, val = shapes_model()
    config = CodeProbeConfig(
        train_images=40, steps=10, seed=3, probes=["linear"], shuffled_control=False, attributes=["background", "count"]
    )

    results = CodeProbeTask(config).run(model, val, tmp_path)

    assert list(results["attributes"]) == ["background", "count"]
    assert set(results["attributes"]["count"]) == {"linear", "majority", "classes"}
    assert set(results) == {
        "linear_mean",
        "majority_mean",
        "attributes",
        "train_images",
        "val_images",
        "features",
        "steps",
        "seed",
        "better",
    }


def test_compare_ranks_the_probe_accuracies_and_not_the_control(tmp_path):
    model, val = shapes_model()
    results = CodeProbeTask(CodeProbeConfig(train_images=32, steps=5, attributes=["background"])).run(
        model, val, tmp_path
    )

    rows = {row.metric: row.better for row in table_rows([{"run": {}, "eval": {"code-probe": results}}])}

    assert rows["code-probe: linear_mean"] == rows["code-probe: attributes.background.mlp"] == "higher"
    assert rows["code-probe: shuffled_mean"] is None and rows["code-probe: attributes.background.majority"] is None
    assert "code-probe: better.linear_mean" not in rows


def folder_dataset(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "a.png")
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": "a.png", "caption": "a gray square"}) + "\n")
    table = {"type": "image-text-folder", "root": str(tmp_path), "val_file": "train.jsonl", "image_size": 8}
    return build("dataset", table, context=BuildContext(split="val", log=lambda message: None))


def test_a_dataset_without_attributes_is_refused_naming_it(tmp_path):
    folder = folder_dataset(tmp_path)
    model, _ = shapes_model()
    model.train_data = folder
    task = CodeProbeTask(CodeProbeConfig())
    expected = (
        "code-probe needs per-image attributes: dataset 'image-text-folder' has no 'attributes' annotations; "
        "datasets with them: shapes"
    )

    assert task.requires(model) == expected  # evaluation refuses it before any task works
    with pytest.raises(TaskError) as caught:
        task.run(model, folder, tmp_path)
    assert str(caught.value) == expected
    with pytest.raises(TaskError, match="dataset 'ListData' has no annotations interface"):
        task.run(trained_model(ColourGridTokenizer()), ListData(id_images(2), [["x"]] * 2), tmp_path)


def test_an_unknown_attribute_is_refused_naming_the_valid_ones(tmp_path):
    model, val = shapes_model()

    with pytest.raises(TaskError) as caught:
        CodeProbeTask(CodeProbeConfig(attributes=["background", "has_hexagon"])).run(model, val, tmp_path)

    assert str(caught.value).startswith(
        "code-probe: unknown attribute(s) 'has_hexagon'; dataset 'shapes' has: count, has_circle, has_square,"
    )
    assert str(caught.value).endswith("largest_position, background")


def test_lgvq_check_refuses_code_probe_on_a_dataset_without_attributes(make_plugin_manager, tmp_path):
    make_plugin_manager(["core", "testing", "tasks"])
    config = copy.deepcopy(TINY_RUN)
    config["tasks"] = [{"type": "reconstruction"}, {"type": "code-probe"}]
    assert validate_run_file(copy.deepcopy(config)).config.tasks[1].type == "code-probe"  # shapes has them

    config["data"] = {"type": "image-text-folder", "root": str(tmp_path), "val_fraction": 0.5}
    with pytest.raises(ConfigError) as caught:
        validate_run_file(config)

    assert caught.value.problems == [
        "$.tasks[1]: task 'code-probe' needs per-image attributes: dataset 'image-text-folder' has no 'attributes' "
        "annotations; datasets with them: shapes"
    ]


def test_lgvq_run_evaluates_code_probe_on_its_own_train_split(tmp_path):
    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name="probe", output_dir=str(tmp_path / "runs"))
    config["tasks"] = [{"type": "code-probe", "train_images": 12, "steps": 5, "attributes": ["count", "background"]}]

    run_dir = train(load_run_file(write_run_file(config, tmp_path / "probe.toml"))).run_dir

    record = json.loads((run_dir / "eval" / "code-probe.json").read_text())
    metrics = record["metrics"]
    assert record["options"]["train_images"] == 12 and record["options"]["attributes"] == ["count", "background"]
    assert metrics["train_images"] == 12 and metrics["val_images"] == 8  # TINY_RUN: 16 train, 8 val images
    assert metrics["features"] == 16 * 8 * 8  # vq dim 16 on a 32 px image, f = 4
    assert list(metrics["attributes"]) == ["count", "background"]
    assert 0.0 <= metrics["mlp_mean"] <= 1.0 and metrics["better"]["mlp_mean"] == "higher"


def test_the_attribute_gap_of_samples_is_the_tv_distance_of_the_probes_labels():
    from lgvq_core.context import BuildContext
    from lgvq_core.data.codes import CodeDataset
    from lgvq_core.quantizers.vq import VectorQuantizer
    from lgvq_core.registry import build
    from lgvq_tasks.code_probe import attribute_gap

    quantizer = VectorQuantizer(3, 3)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.eye(3))  # code k: the k-th unit vector
    codes = {}
    for split in ("train", "val"):
        table = {"type": "shapes", "image_size": 32, "num_train": 120, "num_val": 30}
        images = build("dataset", table, context=BuildContext(split=split))
        background = torch.tensor([images.attributes(i)["background"] for i in range(len(images))])
        indices = background[:, None, None].expand(-1, 2, 2).contiguous()  # the codes spell the background
        codes[split] = CodeDataset({"indices": indices, "valid": torch.ones(len(images), dtype=torch.bool)}, images)
    same = attribute_gap(quantizer, codes, codes["val"].indices, train_images=120, steps=200)
    assert same["tv_mean"] == 0.0 and same["probe_val_accuracy"]["background"] == 1.0
    copies = codes["val"].indices[:1].repeat(30, 1, 1)  # one image drawn 30 times
    gap = attribute_gap(quantizer, codes, copies, train_images=120, steps=200)
    val_background = codes["val"].indices[:, 0, 0]
    share = float((val_background == val_background[0]).float().mean())
    assert gap["tv_distance"]["background"] == pytest.approx(1.0 - share)  # all mass on one of the val's classes
    assert gap["tv_mean"] == pytest.approx(sum(gap["tv_distance"].values()) / len(gap["tv_distance"]))
