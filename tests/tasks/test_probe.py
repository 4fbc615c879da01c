"""The probe's code ViT (a fresh semantic head on frozen codes) takes its shape from the run file."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lgvq_core.config.schema import CodeViTSection
from lgvq_tasks.config import ProbeConfig
from lgvq_tasks.probe import build_probe


def test_the_probe_code_vit_has_the_run_files_layers_heads_and_width(text_encoder):
    config = SimpleNamespace(code_vit=CodeViTSection(layers=1, heads=3, width=6))  # 3 heads do not divide D = 8
    model = SimpleNamespace(config=config, device=torch.device("cpu"), text_encoder=text_encoder)
    probe = build_probe(model, ProbeConfig(), torch.Size([2, 8, 2, 2]))
    vit = probe.code_vit
    assert (len(vit.resblocks), vit.resblocks[0].attn.num_heads, vit.width, vit.code_dim) == (1, 3, 6, 8)
    assert vit(torch.randn(2, 8, 2, 2)).shape == (2, 5, text_encoder.width)
