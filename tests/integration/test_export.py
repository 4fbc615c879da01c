"""`lgvq export`: a trained tokenizer as a diffusers VQModel folder and as a self-describing lgvq folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lgvq_backbones.interop.diffusers_vqmodel import OTHER_BACKBONES, refusal
from lgvq_core.api import ExportError, load_tokenizer
from lgvq_core.cli import main
from lgvq_core.config.describe import dumps_toml
from lgvq_core.errors import CheckpointError
from lgvq_core.interop import folder_export
from lgvq_core.interop.exporting import build_exporter, export_tokenizer
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Three levels (16, 8, 4 px) with attention at the middle one only, so that the up-block order and
#: the attention placement are both tested; widening levels give the residual shortcuts.
BACKBONE = {
    "type": "vqgan",
    "ch": 16,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [8],
    "z_channels": 8,
    "norm_groups": 8,
    "disc_start": 100,
}

EVAL_RECORD = {"task": "reconstruction", "step": 2, "options": {}, "metrics": {"psnr": 9.25, "usage": {"codes": 0.5}}}


def run_file(root: Path, backbone: dict | None = None, quantizer: dict | None = None) -> Path:
    data = {
        "run": {"name": "exported", "seed": 4, "output_dir": str(root / "runs"), "progress": "off"},
        "model": {
            "backbone": backbone or BACKBONE,
            "quantizer": quantizer or {"type": "vq", "codebook_size": 16, "dim": 4},
        },
        "data": {"type": "shapes", "image_size": 16, "num_train": 8, "num_val": 4},
        "train": {"batch_size": 4, "max_steps": 2, "base_lr": 1e-3, "lr_scaling": "none", "val_every": 2},
    }
    path = root / "run.toml"
    path.write_text(dumps_toml(data))
    return path


@pytest.fixture(scope="module")
def vqgan_run(tmp_path_factory) -> Path:
    """A vqgan run trained for two steps, with an evaluation record as `lgvq eval` writes one."""
    root = tmp_path_factory.mktemp("export")
    run_dir = train(load_run_file(run_file(root))).run_dir
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "reconstruction.json").write_text(json.dumps(EVAL_RECORD))
    return run_dir


def images(count: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.rand(count, 3, 16, 16, generator=generator) * 2 - 1


def quiet(message: str) -> None:
    pass


# ------------------------------------------------------------------------------------------
# diffusers
# ------------------------------------------------------------------------------------------
def test_a_vqgan_exported_for_diffusers_encodes_quantises_and_decodes_as_lgvq_does(vqgan_run, tmp_path):
    from diffusers import VQModel

    out = tmp_path / "vqmodel"
    written = export_tokenizer(vqgan_run, "diffusers", out, log=quiet)
    assert {p.name for p in written} == {"config.json", "diffusion_pytorch_model.safetensors", "README.md"}
    config = json.loads((out / "config.json").read_text())
    assert config["down_block_types"] == ["DownEncoderBlock2D", "AttnDownEncoderBlock2D", "DownEncoderBlock2D"]
    assert config["up_block_types"] == ["UpDecoderBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
    assert config["block_out_channels"] == [16, 32, 32] and config["vq_embed_dim"] == 4

    theirs = VQModel.from_pretrained(out, low_cpu_mem_usage=False).eval()
    ours = load_tokenizer(vqgan_run).module
    x = images()
    with torch.no_grad():
        latents = ours.encode(x)
        quantized = ours.quantizer(latents)
        decoded = ours.decode(quantized.quant)
        their_latents = theirs.encode(x).latents
        their_quant, _, (_, _, their_indices) = theirs.quantize(their_latents)
        their_decoded = theirs.decode(their_latents).sample
        # decoding from indices alone: the codebook rows, then the decoder without quantising again
        grid = quantized.indices.shape
        from_indices = theirs.quantize.get_codebook_entry(quantized.indices.reshape(-1), (*grid, 4))
        their_decoded_from_codes = theirs.decode(from_indices, force_not_quantize=True).sample
    differences = {
        "encode": (latents - their_latents).abs().max().item(),
        "quantize": (quantized.quant - their_quant).abs().max().item(),
        "decode": (decoded - their_decoded).abs().max().item(),
        "decode_from_codes": (ours.decode_indices(quantized.indices) - their_decoded_from_codes).abs().max().item(),
    }
    print("largest |lgvq - diffusers|:", differences)
    assert torch.equal(quantized.indices.reshape(-1), their_indices.reshape(-1))
    assert quantized.indices.unique().numel() > 1  # a real test of the lookup, not one code everywhere
    assert max(differences.values()) <= 1e-5, differences
    assert "step 2" in (out / "README.md").read_text()


def test_a_non_empty_out_folder_is_refused_and_left_as_it_was(vqgan_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["export", str(vqgan_run), "--format", "diffusers", str(out)])
    assert code == 1
    assert "folder is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_missing_diffusers_gives_the_install_line_not_a_traceback(vqgan_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now fails as if not installed
    out = tmp_path / "vqmodel"
    code = main(["export", str(vqgan_run), "--format", "diffusers", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "pip install 'lgvq-backbones[diffusers]'" in err and "Traceback" not in err
    assert not out.exists()


def tokenizer_config(tmp_path: Path, backbone: dict | None = None, quantizer: dict | None = None):
    return load_run_file(run_file(tmp_path, backbone, quantizer)).config


@pytest.mark.parametrize(
    ("backbone", "quantizer", "named"),
    [
        ({"type": "vqvae"}, {"type": "vq", "codebook_size": 16, "dim": 4}, "4×4 strided and transposed convolutions"),
        (
            {"type": "cvq", "ch": 16, "ch_mult": [1, 2], "attn_resolutions": [8], "z_channels": 8, "norm_groups": 8},
            {"type": "cvq", "codebook_size": 16, "dim": 4},
            "lacks the CVQ quantizer",
        ),
        (None, {"type": "cosine", "codebook_size": 16, "dim": 4}, "cosine similarity of l2-normalised vectors"),
        (None, {"type": "vq", "codebook_size": 16, "dim": 4, "lookup_dim": 2}, "lookup_dim = 2: factorised codes"),
        ({**BACKBONE, "ch_mult": [2, 2]}, None, "ch_mult[0] = 2"),
    ],
)
def test_what_a_diffusers_vqmodel_cannot_hold_is_refused_naming_what_it_lacks(tmp_path, backbone, quantizer, named):
    exporter = build_exporter("diffusers", {}, quiet)
    with pytest.raises(ExportError, match="cannot be written as a diffusers VQModel") as caught:
        exporter.check(tokenizer_config(tmp_path, backbone, quantizer))
    assert named in str(caught.value)


def test_a_vqct_tokenizer_is_refused_for_diffusers_with_the_reason():
    config = SimpleNamespace(model=SimpleNamespace(backbone=SimpleNamespace(type="vqct"), quantizer=None))
    assert refusal(config) == f"$.model.backbone.type = 'vqct': {OTHER_BACKBONES['vqct']}"


def test_a_refused_backbone_is_refused_before_any_weights_are_read(tmp_path):
    run_dir = tmp_path / "vqvae-run"
    run_dir.mkdir()
    source = run_file(tmp_path, {"type": "vqvae"})
    shutil.copy(source, run_dir / "resolved.toml")  # a run directory without checkpoints
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="'vqvae'"):
        export_tokenizer(run_dir, "diffusers", out, log=quiet)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


# ------------------------------------------------------------------------------------------
# folder
# ------------------------------------------------------------------------------------------
def test_a_folder_export_loads_without_its_run_and_gives_the_same_codes_and_images(vqgan_run, tmp_path):
    copy = tmp_path / "run-copy"
    shutil.copytree(vqgan_run, copy)
    folder = tmp_path / "tokenizer"
    export_tokenizer(copy, "folder", folder, log=quiet)
    shutil.rmtree(copy)  # the folder stands alone

    from_run, from_folder = load_tokenizer(vqgan_run), load_tokenizer(folder)
    x = images()
    codes = from_run.encode(x)
    assert torch.equal(from_folder.encode(x), codes)
    assert torch.equal(from_folder.decode(codes), from_run.decode(codes))
    assert torch.equal(from_folder.embed(codes), from_run.embed(codes))
    assert torch.equal(from_folder.codebook, from_run.codebook)
    assert from_folder.step == from_run.step == 2 and from_folder.image_size == 16 and from_folder.in_channels == 3
    assert from_folder.checkpoint == folder and not from_folder.module.training


def test_the_folder_describes_itself_with_the_runs_evaluation_and_provenance(vqgan_run, tmp_path):
    folder = tmp_path / "tokenizer"
    written = export_tokenizer(vqgan_run, "folder", folder, checkpoint="last", log=quiet)
    assert {p.name for p in written} == {"lgvq-tokenizer.json", "model.safetensors", "config.toml", "README.md"}
    record = json.loads((folder / "lgvq-tokenizer.json").read_text())
    run = load_tokenizer(vqgan_run, checkpoint="last")
    assert record["format"] == "lgvq-tokenizer" and record["step"] == 2
    assert record["provenance"]["checkpoint_sha256"] == run.sha256
    assert record["provenance"]["providers"]["backbone"]["distribution"] == "lgvq-backbones"
    assert record["evaluation"]["reconstruction"]["metrics"] == EVAL_RECORD["metrics"]
    assert (folder / "config.toml").read_text() == (vqgan_run / "resolved.toml").read_text()
    card = (folder / "README.md").read_text()
    assert "| reconstruction | psnr | 9.25 |" in card and "| reconstruction | usage.codes | 0.5 |" in card
    assert run.sha256 in card and str(vqgan_run.resolve()) in card and record["weights_sha256"] in card


def test_a_changed_weights_file_in_a_folder_is_refused(vqgan_run, tmp_path):
    folder = tmp_path / "tokenizer"
    export_tokenizer(vqgan_run, "folder", folder, log=quiet)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="differs from the .* recorded in lgvq-tokenizer.json"):
        load_tokenizer(folder)


def test_an_export_that_fails_midway_leaves_no_out_folder(vqgan_run, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(folder_export, "model_card", broken)  # after the weights are written
    out = tmp_path / "tokenizer"
    with pytest.raises(RuntimeError, match="disk trouble"):
        export_tokenizer(vqgan_run, "folder", out, log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_exports_a_folder_and_lists_what_it_wrote(vqgan_run, tmp_path, capsys):
    out = tmp_path / "tokenizer"
    assert main(["export", str(vqgan_run), "--format", "folder", str(out), "--set", "title=Shapes tokenizer"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (folder):" in printed and "model.safetensors" in printed
    assert (out / "README.md").read_text().startswith("# Shapes tokenizer\n")


def test_a_tokenizer_that_reads_captions_when_built_is_refused_by_the_folder_format():
    exporter = build_exporter("folder", {}, quiet)
    quantizer = SimpleNamespace(type="vqct", config=SimpleNamespace(uses_text=True))
    config = SimpleNamespace(model=SimpleNamespace(quantizer=quantizer, backbone=None))
    with pytest.raises(ExportError, match="a tokenizer folder carries neither"):
        exporter.check(config)
