"""Every run file under examples/ is valid, and the paper presets carry the paper's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from lgvq_core.registry import load_run_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_FILES = sorted(p for p in EXAMPLES.rglob("*.toml") if "plugins" not in p.parts)
PRESETS = sorted((EXAMPLES / "paper").rglob("*.toml"))

# LG-VQ weights (semantic-nce, masked-text, relation) of the official configs (docs/method.md: Training objective).
WEIGHTS = {
    "celeba-hq": (0.001, 0.01, 0.0001),
    "textcaps": (0.001, 0.01, 0.0001),
    "cub-200": (0.001, 0.001, 0.001),
    "mscoco": (0.001, 0.01, 0.0001),
}


def test_the_examples_include_the_quickstart_and_every_table_1_row():
    names = {p.relative_to(EXAMPLES).as_posix() for p in RUN_FILES}
    assert "quickstart.toml" in names
    for dataset in WEIGHTS:
        for row in ("vqvae", "vqgan", "cvq"):
            assert f"paper/{dataset}/{row}.toml" in names
            assert f"paper/{dataset}/{row}-lg.toml" in names


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_run_file_passes_check(path):
    loaded = load_run_file(path)
    assert loaded.config.model.backbone.type


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_paper_presets_use_the_paper_settings(path):
    config = load_run_file(path).config
    assert config.data.config.image_size == 256
    assert config.train.batch_size == 8
    assert tuple(config.train.betas) == (0.5, 0.9)
    if path.stem.endswith("-lg"):
        assert [a.type for a in config.alignment] == ["semantic-nce", "masked-text", "relation"]
        assert tuple(a.config.weight for a in config.alignment) == WEIGHTS[path.parent.name]
        assert config.text_encoder.type == "open_clip" and config.text_encoder.config.context_length == 30
    else:
        assert config.alignment == []
    if config.model.backbone.type in ("vqgan", "cvq"):
        assert config.model.backbone.config.disc_start == 10000
        assert config.model.quantizer.config.codebook_size == 1024
