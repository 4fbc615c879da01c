"""Run files of the smallest real runs the integration tests train (a tokenizer to put models on)."""

from __future__ import annotations

from pathlib import Path

from lgvq_core.config.describe import dumps_toml


def tokenizer_run_file(root: Path) -> Path:
    data = {
        "run": {"name": "tok", "seed": 1, "output_dir": str(root / "runs"), "progress": "off"},
        "model": {
            "backbone": {"type": "tiny-ae", "hidden": 8},
            "quantizer": {"type": "vq", "codebook_size": 32, "dim": 16},
        },
        "data": {"type": "shapes", "image_size": 32, "num_train": 24, "num_val": 8},
        "text_encoder": {"type": "tiny-text", "width": 16},
        "train": {"batch_size": 4, "max_steps": 2, "base_lr": 1e-3, "lr_scaling": "none", "val_every": 2},
    }
    path = root / "tok.toml"
    path.write_text(dumps_toml(data))
    return path
