"""An imported taming VQ-GAN is a run like any other: `lgvq eval` evaluates it, a downstream run trains on its
codes, and `train.init_from` fine-tunes it with the LG-VQ alignment losses from exactly its weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomli
import torch
import yaml

from lgvq_core.config.describe import dumps_toml
from lgvq_core.errors import ConfigError
from lgvq_core.interop.importing import import_checkpoint
from lgvq_core.plugins import hookimpl
from lgvq_core.registry import get_plugin_manager
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.load import load_tokenizer
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics

pytest.importorskip("taming")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backbones"))
from taming_layouts import TINY_DD, lightning_1x_checkpoint, taming_model, yaml_config  # noqa: E402

DATA = {"type": "shapes", "image_size": 32, "num_train": 8, "num_val": 4}


@pytest.fixture
def imported(tmp_path) -> tuple[Path, object]:
    model = taming_model()
    torch.save(lightning_1x_checkpoint(model.state_dict()), tmp_path / "last.ckpt")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(yaml_config("taming.models.vqgan.VQModel", TINY_DD)))
    options = {"type": "taming", "config": str(tmp_path / "config.yaml")}
    import_checkpoint(options, tmp_path / "last.ckpt", tmp_path / "imported", log=lambda m: None)
    return tmp_path / "imported", model


def fine_tune_file(tmp_path: Path, init_from: Path, model_tables: dict) -> Path:
    data = {
        "run": {"name": "ft", "seed": 0, "output_dir": str(tmp_path / "runs"), "log_every": 1, "progress": "off"},
        "model": model_tables,
        "data": {**DATA, "captions_per_image": 1},
        "text_encoder": {"type": "tiny-text", "width": 16},
        "code_vit": {"layers": 1, "heads": 1},
        "alignment": [{"type": "semantic-nce", "weight": 0.1}, {"type": "relation", "weight": 0.1}],
        "train": {
            "batch_size": 4,
            "max_steps": 2,
            "lr": 1e-4,
            "val_every": 2,
            "checkpoint_every": 2,
            "sample_every": 100,
            "init_from": str(init_from),
            "init_checkpoint": "last",
        },
    }
    path = tmp_path / "ft.toml"
    path.write_text(dumps_toml(data))
    return path


class StartWatcher:
    """Records, when training starts, the run's tokenizer weights and its reconstruction of fixed images."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.weights: dict[str, torch.Tensor] = {}
        self.recon: torch.Tensor | None = None

    @hookimpl
    def lgvq_train_start(self, run) -> None:
        self.weights = {k: v.clone() for k, v in run.model.state_dict().items()}
        run.model.eval()
        with torch.no_grad():
            output = run.model(self.images)
        run.model.train()
        self.recon = output.recon


def test_init_from_fine_tunes_the_imported_model_with_the_lg_losses(tmp_path, imported):
    run_dir, source = imported
    model_tables = tomli.loads((run_dir / "resolved.toml").read_text())["model"]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2 - 1
    watcher = StartWatcher(images)
    manager = get_plugin_manager()
    manager.register(watcher, name="start-watcher")
    try:
        result = train(load_run_file(fine_tune_file(tmp_path, run_dir, model_tables)))
    finally:
        manager.unregister(name="start-watcher")

    with torch.no_grad():
        expected, _ = source(images)
    assert (watcher.recon - expected).abs().max() <= 1e-5  # the first step starts from the imported model
    assert torch.equal(watcher.weights["quantizer.embedding.weight"], source.quantize.embedding.weight)
    steps = [r for r in read_metrics(result.run_dir) if r.get("split", "train") == "train" and "step" in r]
    assert {1, 2} <= {r["step"] for r in steps}
    assert any(any("semantic" in k or "nce" in k for k in r) for r in steps)  # the alignment losses ran


def test_init_from_a_missing_directory_is_a_config_error(tmp_path, imported):
    run_dir, _ = imported
    model_tables = tomli.loads((run_dir / "resolved.toml").read_text())["model"]
    path = fine_tune_file(tmp_path, tmp_path / "nowhere", model_tables)

    with pytest.raises(ConfigError) as caught:
        load_run_file(path)
    assert any(p.startswith("$.train.init_from:") and "does not exist" in p for p in caught.value.problems)


def test_lgvq_eval_evaluates_the_imported_run(imported, lgvq_cli):
    run_dir, _ = imported

    result = lgvq_cli(
        "eval", str(run_dir), "--tasks", "codebook", "--set", "data.num_train=8", "--set", "data.num_val=4"
    )

    assert result.code == 0, result.err
    assert (run_dir / "eval" / "codebook.json").is_file()


def test_a_downstream_run_trains_on_the_imported_codes(tmp_path, imported):
    run_dir, _ = imported
    data = {
        "run": {"name": "prior", "seed": 5, "output_dir": str(tmp_path / "runs"), "log_every": 1, "progress": "off"},
        "tokenizer": {"run_dir": str(run_dir)},
        "data": DATA,
        "downstream": {"type": "tiny-prior"},
        "train": {"batch_size": 4, "max_steps": 2, "base_lr": 1e-3, "lr_scaling": "none", "val_every": 2},
    }
    path = tmp_path / "prior.toml"
    path.write_text(dumps_toml(data))

    result = train(load_run_file(path))

    assert any(r.get("step") == 2 for r in read_metrics(result.run_dir))


def test_a_resumed_fine_tuning_run_starts_from_its_own_checkpoint_not_init_from(tmp_path, imported, monkeypatch):
    run_dir, _ = imported
    model_tables = tomli.loads((run_dir / "resolved.toml").read_text())["model"]
    first = train(load_run_file(fine_tune_file(tmp_path, run_dir, model_tables)))
    own = load_tokenizer(first.run_dir, "last").module.state_dict()

    def not_on_resume(*args, **kwargs):
        raise AssertionError("init_from was read by a resumed run")

    monkeypatch.setattr("lgvq_core.runner.components.apply_init_from", not_on_resume)
    watcher = StartWatcher(torch.zeros(1, 3, 32, 32))
    manager = get_plugin_manager()
    manager.register(watcher, name="start-watcher")
    try:
        resumed = train(
            load_run_file(first.run_dir / "resolved.toml", overrides=["train.max_steps=3"]), resume_dir=first.run_dir
        )
    finally:
        manager.unregister(name="start-watcher")
    assert resumed.step == 3
    for key, value in own.items():
        assert torch.equal(watcher.weights[key], value), key


def test_a_fine_tuned_run_resumes_and_evaluates_after_its_init_from_directory_is_gone(tmp_path, imported, lgvq_cli):
    import shutil

    run_dir, _ = imported
    model_tables = tomli.loads((run_dir / "resolved.toml").read_text())["model"]
    first = train(load_run_file(fine_tune_file(tmp_path, run_dir, model_tables)))
    shutil.rmtree(run_dir)
    with pytest.raises(ConfigError, match=r"\$\.train\.init_from: .* does not exist"):
        load_run_file(first.run_dir / "resolved.toml")  # a new run of that file still needs it

    resumed = lgvq_cli("run", "--resume", str(first.run_dir), "--set", "train.max_steps=3")
    assert resumed.code == 0, resumed.err
    assert "no longer exists; this run's weights are its own checkpoints" in resumed.out + resumed.err
    assert load_tokenizer(first.run_dir, "last").step == 3
    evaluated = lgvq_cli("eval", str(first.run_dir), "--tasks", "codebook")
    assert evaluated.code == 0, evaluated.err
