"""A real LG-VQ run: the pretrained MiniLM encoder, the three losses at their official settings, shapes."""

from __future__ import annotations

import pytest

from lgvq_core.config.describe import dumps_toml
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.runner.rundir import read_metrics


@pytest.mark.slow
def test_the_three_lg_losses_decrease_with_minilm_on_shapes(tmp_path):
    run_file = {
        "run": {"name": "lg", "seed": 0, "output_dir": str(tmp_path / "runs"), "log_every": 1, "progress": "off"},
        "model": {
            "backbone": {"type": "vqvae", "hidden": 32, "residual_hidden": 16, "residual_blocks": 1, "downsample": 4},
            "quantizer": {"type": "cvq", "codebook_size": 64, "dim": 32},
        },
        "text_encoder": {"type": "minilm"},
        # official options of every loss (tau = 1, unmasked-contextual input, official relation)
        "alignment": [
            {"type": "semantic-nce", "weight": 0.1},
            {"type": "masked-text", "weight": 0.1},
            {"type": "relation", "weight": 0.1},
        ],
        "data": {"type": "shapes", "image_size": 32, "num_train": 32, "num_val": 8, "captions_per_image": 1},
        "train": {
            "batch_size": 8,
            "max_steps": 150,
            "lr": 3e-4,
            "val_every": 1000,
            "sample_every": 1000,
            "checkpoint_every": 1000,
        },
    }
    path = tmp_path / "lg.toml"
    path.write_text(dumps_toml(run_file))
    result = train(load_run_file(path))

    records = [r for r in read_metrics(result.run_dir) if r["split"] == "train"]
    assert len(records) == 150

    def mean(term, part):
        values = [r[term] for r in part]
        return sum(values) / len(values)

    first, last = records[:30], records[-30:]
    # semantic-nce starts at log B (= 2.08 for B = 8); with tau = 1 its floor is far above 0
    assert mean("semantic_nce_loss", first) == pytest.approx(2.079, abs=0.02)
    assert mean("semantic_nce_loss", last) < 0.97 * mean("semantic_nce_loss", first)
    assert mean("masked_text_loss", last) < 0.85 * mean("masked_text_loss", first)
    assert mean("relation_loss", last) < 0.8 * mean("relation_loss", first)
