"""`lgvq import taming|lg-vq`: checkpoints in the layout taming-transformers and the official LG-VQ code
save become lgvq run directories whose tokenizer reconstructs what the source model reconstructs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from taming_layouts import (
    EMBED_DIM,
    LG_DD,
    N_EMBED,
    TINY_DD,
    lightning_1x_checkpoint,
    lightning_2x_checkpoint,
    official_extra_weights,
    taming_model,
    yaml_config,
)

from lgvq_core.api import load_tokenizer
from lgvq_core.cli import main
from lgvq_core.errors import CheckpointError, ConfigError, RunDirError
from lgvq_core.interop.importing import format_report, import_checkpoint

pytest.importorskip("taming")

TOLERANCE = 1e-5


def images(seed: int = 3) -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def write(tmp_path: Path, checkpoint: dict, config: dict | None = None) -> tuple[Path, Path | None]:
    ckpt = tmp_path / "last.ckpt"
    torch.save(checkpoint, ckpt)
    if config is None:
        return ckpt, None
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return ckpt, path


def taming_reference(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """taming's own forward: (reconstruction, code indices B×h×w)."""
    with torch.no_grad():
        recon, _ = model(x)
        _, _, (_, _, indices) = model.encode(x)
    return recon, indices.view(x.shape[0], 16, 16)


def test_taming_vqmodel_imports_and_reconstructs_as_taming(tmp_path):
    model = taming_model()
    ckpt, config = write(
        tmp_path, lightning_1x_checkpoint(model.state_dict()), yaml_config("taming.models.vqgan.VQModel", TINY_DD)
    )

    result = import_checkpoint({"type": "taming", "config": str(config)}, ckpt, tmp_path / "run", log=lambda m: None)

    tokenizer = load_tokenizer(tmp_path / "run")
    x = images()
    recon, indices = taming_reference(model, x)
    codes = tokenizer.encode(x)
    assert torch.equal(codes, indices)
    assert (tokenizer.decode(codes) - recon).abs().max() <= TOLERANCE
    assert tokenizer.step == 1234  # the source's global_step
    # the PatchGAN came across too, as the run's discriminator
    assert result.taken["discriminator.main.0.weight"] == "loss.discriminator.main.0.weight"
    assert not any(k.startswith("loss.perceptual_loss") for k in result.taken.values())
    assert result.imported.ignored["loss.perceptual_loss.net.slice1.0.weight"].startswith("LPIPS")
    assert "optimizer_states (checkpoint entry)" in result.imported.ignored
    resolved = (tmp_path / "run" / "resolved.toml").read_text()
    assert 'beta_placement = "codebook"' in resolved and "norm_groups = 32" in resolved


def test_imported_discriminator_scores_as_tamings(tmp_path):
    from lgvq_backbones.vqgan.discriminator import PatchDiscriminator
    from lgvq_core.runner.load import read_checkpoint

    model = taming_model()
    ckpt, config = write(
        tmp_path, lightning_1x_checkpoint(model.state_dict()), yaml_config("taming.models.vqgan.VQModel", TINY_DD)
    )
    import_checkpoint({"type": "taming", "config": str(config)}, ckpt, tmp_path / "run", log=lambda m: None)

    read = read_checkpoint(tmp_path / "run", "last")
    ours = PatchDiscriminator(3, 64, 3).eval()
    ours.load_state_dict(read.weights("discriminator"))
    x = images()
    with torch.no_grad():
        assert (ours(x) - model.loss.discriminator.eval()(x)).abs().max() <= TOLERANCE


def official_state_dict(seed: int, cvq: bool) -> tuple[dict, object]:
    """An official LG_vqgan / LG_cvq state dict: taming's VQModel keys (its encoder, decoder, quantizer and
    loss are taming's modules) plus CLIP and the alignment heads; LG_cvq adds quantize.embed_prob."""
    model = taming_model(seed, LG_DD)
    state = dict(model.state_dict())
    state.update(official_extra_weights(torch.Generator().manual_seed(seed)))
    if cvq:
        state["quantize.embed_prob"] = torch.rand(N_EMBED) / N_EMBED
    return state, model


def test_official_lg_vqgan_imports_from_its_hyper_parameters(tmp_path):
    state, model = official_state_dict(1, cvq=False)
    hyper = yaml_config("taming.models.LG_vqgan.VQModel", LG_DD, {"nceloss_weight": 0.001, "mskloss_weight": 0.01})
    ckpt, _ = write(tmp_path, lightning_2x_checkpoint(state, hyper["model"]["params"]))

    result = import_checkpoint({"type": "lg-vq"}, ckpt, tmp_path / "run", log=lambda m: None)

    tokenizer = load_tokenizer(tmp_path / "run")
    x = images()
    recon, indices = taming_reference(model, x)  # taming's VQModel holding the checkpoint's tokenizer weights
    codes = tokenizer.encode(x)
    assert torch.equal(codes, indices)
    assert (tokenizer.decode(codes) - recon).abs().max() <= TOLERANCE
    ignored = result.imported.ignored
    assert ignored["clip_model.token_embedding.weight"].startswith("the official model's frozen CLIP")
    for key in (
        "mskTransformer.encoder.layers.0.attention.w_q.weight",
        "mask_learned_parameter",
        "mlm_layer.bias",
        "wrsr_fc.fc.weight",
    ):
        assert ignored[key].startswith("official LG-VQ alignment head")
    assert set(result.taken.values()).isdisjoint(ignored)
    assert len(result.taken) + sum(not k.endswith("(checkpoint entry)") for k in ignored) == len(state)
    unmapped = result.imported.unmapped_config
    assert "ddconfig.clip_text_truncate_len" in unmapped and "lossconfig.params.nceloss_weight" in unmapped
    report = format_report(result)
    assert "clip_model.* (7): the official model's frozen CLIP" in report
    assert "config keys with no lgvq equivalent:" in report


def cvq_reference(model, codebook: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LG_cvq's eval forward from the checkpoint's weights: taming's encoder/decoder (LG_cvq's own) around
    CVQ's lookup, written here: the code of largest -||z||² - ||e||² + 2 z·e."""
    with torch.no_grad():
        z = model.quant_conv(model.encoder(x)).permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
        d = -(z**2).sum(1, keepdim=True) - (codebook**2).sum(1) + 2 * z @ codebook.t()
        indices = d.argmax(1)
        quant = codebook[indices].view(x.shape[0], 16, 16, EMBED_DIM).permute(0, 3, 1, 2).contiguous()
        return model.decode(quant), indices.view(x.shape[0], 16, 16)


def test_official_lg_cvq_imports_as_a_cvq_run(tmp_path):
    state, model = official_state_dict(2, cvq=True)
    ckpt, config = write(tmp_path, lightning_1x_checkpoint(state), yaml_config("taming.models.LG_cvq.VQModel", LG_DD))

    result = import_checkpoint({"type": "lg-vq", "config": str(config)}, ckpt, tmp_path / "run", log=lambda m: None)

    tokenizer = load_tokenizer(tmp_path / "run")
    assert type(tokenizer.module.quantizer).__name__ == "CVQQuantizer"
    assert torch.equal(tokenizer.module.quantizer.code_usage, state["quantize.embed_prob"])
    x = images()
    recon, indices = cvq_reference(model, state["quantize.embedding.weight"], x)
    codes = tokenizer.encode(x)
    assert torch.equal(codes, indices)
    assert (tokenizer.decode(codes) - recon).abs().max() <= TOLERANCE
    assert "tokenizer.quantizer.initialised" in result.imported.kept_initial


def test_a_shape_mismatch_is_refused_naming_the_key_and_both_shapes(tmp_path):
    model = taming_model()
    config = yaml_config("taming.models.vqgan.VQModel", TINY_DD)
    config["model"]["params"]["n_embed"] = 32  # the checkpoint's codebook has 16 codes
    ckpt, path = write(tmp_path, lightning_1x_checkpoint(model.state_dict()), config)

    with pytest.raises(CheckpointError) as caught:
        import_checkpoint({"type": "taming", "config": str(path)}, ckpt, tmp_path / "run", log=lambda m: None)
    assert f"quantize.embedding.weight: shape (16, {EMBED_DIM}) in the checkpoint, (32, {EMBED_DIM})" in str(
        caught.value
    )
    assert str(ckpt) in str(caught.value)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.import-*"))


def test_an_unknown_state_dict_key_is_refused(tmp_path):
    state = dict(taming_model().state_dict())
    state["mystery.weight"] = torch.zeros(3)
    ckpt, config = write(tmp_path, lightning_1x_checkpoint(state), yaml_config("taming.models.vqgan.VQModel", TINY_DD))

    with pytest.raises(CheckpointError, match="mystery.weight"):
        import_checkpoint({"type": "taming", "config": str(config)}, ckpt, tmp_path / "run", log=lambda m: None)


def test_without_config_or_hyper_parameters_it_asks_for_config(tmp_path):
    ckpt, _ = write(tmp_path, lightning_1x_checkpoint(taming_model().state_dict()))

    with pytest.raises(ConfigError, match="pass the YAML config it was trained with: --config CONFIG.yaml"):
        import_checkpoint({"type": "taming"}, ckpt, tmp_path / "run", log=lambda m: None)


def test_a_model_of_the_other_project_is_refused_with_the_right_importer(tmp_path):
    ckpt, config = write(
        tmp_path,
        lightning_1x_checkpoint(taming_model().state_dict()),
        yaml_config("taming.models.LG_vqgan.VQModel", TINY_DD),
    )

    with pytest.raises(ConfigError, match="use `lgvq import lg-vq`"):
        import_checkpoint({"type": "taming", "config": str(config)}, ckpt, tmp_path / "run", log=lambda m: None)


def test_a_non_empty_out_dir_is_refused_before_reading(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")

    with pytest.raises(RunDirError, match="not an empty directory"):
        import_checkpoint({"type": "taming"}, tmp_path / "absent.ckpt", tmp_path / "run", log=lambda m: None)
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


class CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    checkpoint = lightning_1x_checkpoint(taming_model().state_dict())
    checkpoint["callbacks"]["payload"] = CreatesAFile(marker)
    ckpt, config = write(tmp_path, checkpoint, yaml_config("taming.models.vqgan.VQModel", TINY_DD))

    code = main(["import", "taming", str(ckpt), str(tmp_path / "run"), "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 1
    assert not marker.exists()
    assert f"{ckpt}: refused" in err and "system" in err
    assert "weights_only=False" in err and "Do not load" in err  # never the advice to unpickle
    assert not (tmp_path / "run").exists()


def test_the_cli_imports_and_reports_taken_and_ignored_keys(tmp_path, capsys):
    ckpt, config = write(
        tmp_path,
        lightning_1x_checkpoint(taming_model().state_dict()),
        yaml_config("taming.models.vqgan.VQModel", TINY_DD),
    )

    code = main(
        ["import", "taming", str(ckpt), str(tmp_path / "run"), "--config", str(config), "--set", "discriminator=false"]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "taken: 155 weights" in out  # the tokenizer alone
    assert "loss.discriminator.* (22): discriminator = false" in out
    assert "loss.perceptual_loss.* (17): LPIPS" in out
    record = (tmp_path / "run" / "import.json").read_text()
    assert '"encoder.conv_in.weight": "tokenizer.encoder.conv_in.weight"' in record
