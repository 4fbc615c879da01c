"""Values that used to pass `lgvq check` and die in `lgvq run`: each is a `$.path: message` from
`lgvq check` (exit 2), and `lgvq run` stops on it before writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli

from lgvq_core.cli import main
from lgvq_core.config.describe import dumps_toml


def write_run_file(tmp_path: Path) -> Path:
    data = {
        "run": {"name": "limits", "output_dir": str(tmp_path / "runs")},
        "model": {
            "backbone": {"type": "tiny-ae", "hidden": 8},
            "quantizer": {"type": "vq", "codebook_size": 16, "dim": 16},
        },
        "data": {"type": "shapes", "image_size": 16, "num_train": 8, "num_val": 4},
        "text_encoder": {"type": "tiny-text", "width": 16},
        "alignment": [{"type": "semantic-nce", "weight": 0.1}],
        "train": {"batch_size": 4, "max_steps": 1},
    }
    path = tmp_path / "run.toml"
    path.write_text(dumps_toml(data))
    return path


CASES = [
    ("train.betas=[1.5, -0.2]", "$.train.betas: Adam betas must each be in [0, 1), got [1.5, -0.2]"),
    ("run.seed=18446744073709551617", "$.run.seed: must be in [0, 2**62]"),
    ("run.seed=-1", "$.run.seed: must be in [0, 2**62]"),
    ("code_vit.heads=3", "$.code_vit.heads: 3 heads do not divide the code dim 16 ($.model.quantizer.dim)"),
    ("data.image_size=1000000000", "$.data.image_size: must be in [1, 4096]"),
    ("train.lr=inf", "$.train.lr: must be a finite number, got inf"),
    ("train.base_lr=inf", "$.train.base_lr: must be a finite number, got inf"),
    ("train.weight_decay=inf", "$.train.weight_decay: must be a finite number, got inf"),
    ("train.batch_size=9", "$.train.batch_size: 9 is more than the 8 training images ($.data.num_train)"),
    ("train.max_steps.x=1", "$.train.max_steps: --set 'train.max_steps.x=1': is a value, not a table"),
]


@pytest.mark.parametrize(("override", "expected"), CASES, ids=[c[0].split("=")[0] for c in CASES])
def test_check_reports_the_value_with_its_path_and_run_writes_nothing(tmp_path, capsys, override, expected):
    path = write_run_file(tmp_path)
    assert main(["check", str(path)]) == 0
    capsys.readouterr()
    assert main(["check", str(path), "--set", override]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(expected), err
    assert main(["run", str(path), "--set", override]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_every_problem_of_a_file_is_reported_at_once(tmp_path, capsys):
    path = write_run_file(tmp_path)
    sets = ["train.betas=[0.5, 1.0]", "train.lr=inf", "run.seed=-3"]
    assert main(["check", str(path), *[x for s in sets for x in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    for prefix in ("$.train.betas:", "$.train.lr:", "$.run.seed:"):
        assert any(line.startswith(prefix) for line in err.splitlines()), (prefix, err)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("name", "x\n", "$.run.name: must be a non-empty name of letters, digits, '.', '_' or '-', got 'x\\n'"),
        ("name", "x" * 300, "$.run.name: must be at most 100 characters (it names folders), got 300"),
        ("device", "cuda\n", '$.run.device: must be "cpu", "cuda" or "cuda:N", got \'cuda\\n\''),
    ],
    ids=["name-newline", "name-long", "device-newline"],
)
def test_a_run_name_or_device_is_matched_whole(tmp_path, capsys, key, value, expected):
    path = write_run_file(tmp_path)
    data = tomli.loads(path.read_text())
    data["run"][key] = value
    path.write_text(dumps_toml(data))
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(expected)
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "runs").exists()


def test_check_finds_a_missing_data_folder_as_run_would(tmp_path, capsys):
    path = write_run_file(tmp_path)
    data = tomli.loads(path.read_text())
    data["data"] = {"type": "image-text-folder", "root": str(tmp_path / "nowhere"), "val_fraction": 0.5}
    path.write_text(dumps_toml(data))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.splitlines()[0]
        == f"$.data.root: no such folder: {tmp_path / 'nowhere'}; set data.root to the dataset's folder"
    )
    assert main(["run", str(path)]) != 0 and not (tmp_path / "runs").exists()


def test_check_warns_of_a_cuda_device_on_a_machine_without_one(tmp_path, capsys, monkeypatch):
    import torch

    path = write_run_file(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["check", str(path), "--set", "run.device=cuda:3"]) == 0  # a file for a GPU machine is fine
    assert 'warning: $.run.device: "cuda:3" but this machine has no CUDA device' in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["check", str(path), "--set", "run.device=cuda:3"]) == 2
    err = capsys.readouterr().err
    assert '$.run.device: "cuda:3" but this machine has 2 CUDA device(s) (cuda:0 to cuda:1)' in err


def test_a_backbone_that_declares_its_downsampling_gets_the_image_size_check(tmp_path, capsys):
    # tiny-ae declares `downsample` in its config and has no image-size check of its own, like a third-party backbone
    path = write_run_file(tmp_path)
    assert main(["check", str(path), "--set", "data.image_size=18"]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("$.data.image_size: 18 px is not a multiple of the tiny-ae backbone's downsampling (4)")
    assert "use a multiple of 4, e.g. 16 or 20" in first
    assert main(["check", str(path), "--set", "data.image_size=16"]) == 0
