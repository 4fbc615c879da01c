"""The speed options of a run file (``run.channels_last``, ``run.compile``, ``train.optimizer_impl``)
change how the step computes, not what: the same losses and weights as the plain step, within
float tolerance, and checkpoints that load into a plain run."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from lgvq_core.run_file import load_run_file
from lgvq_core.runner.batches import BatchStream
from lgvq_core.runner.components import build_run, compiled_parts
from lgvq_core.runner.state import restore, save
from lgvq_core.runner.step import run_train_step
from lgvq_core.testing.fixtures import TINY_RUN, write_run_file

#: a small real VQ-GAN with its discriminator active from the first step
VQGAN = {
    "type": "vqgan",
    "ch": 16,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "z_channels": 16,
    "norm_groups": 8,
    "disc_start": 0,
    "disc_ndf": 8,
    "perceptual_weight": 0.0,
}


def tiny_config(tmp_path, backbone: dict | None = None) -> dict:
    config = copy.deepcopy(TINY_RUN)
    config["run"]["output_dir"] = str(tmp_path / "runs")
    if backbone is not None:
        config["model"]["backbone"] = dict(backbone)
    return config


def two_steps(config: dict, tmp_path, overrides: list[str], name: str):
    """The run after two steps of the default step on the same batches, and the losses of each."""
    path = write_run_file(config, tmp_path / f"{name}.toml")
    torch.manual_seed(0)
    run = build_run(load_run_file(path, overrides=overrides))
    run.initial_weights = {k: v.detach().clone().contiguous() for k, v in run.model.state_dict().items()}
    stream = BatchStream(run)
    losses = []
    for _ in range(2):
        losses.append(run_train_step(run, [stream.next()]))
        run.step += 1
    return run, losses


def assert_same_training(plain, other, rtol: float, atol: float, update_tol: float) -> None:
    """Same losses at every step, same parameter names, and the same weight update.

    Adam divides each gradient by its running size, so a parameter whose gradient is ~0 (an
    attention key bias, to which softmax is invariant) moves by up to ``lr`` either way on rounding
    noise alone: the update is compared as one vector over the whole tokenizer,
    ``||Δw_other - Δw_plain|| <= update_tol · ||Δw_plain||``.
    """
    (run_a, losses_a), (run_b, losses_b) = plain, other
    for a, b in zip(losses_a, losses_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=rtol, abs=atol), key
    weights_a, weights_b = run_a.model.state_dict(), run_b.model.state_dict()
    assert weights_a.keys() == weights_b.keys()  # parameter names unchanged (checkpoints interchangeable)
    updates_a, updates_b = [], []
    for key, value in weights_a.items():
        if not value.is_floating_point():
            assert torch.equal(weights_b[key], value), key
            continue
        start = run_a.initial_weights[key]
        updates_a.append((value - start).flatten())
        updates_b.append((weights_b[key].contiguous() - start).flatten())
    update_a, update_b = torch.cat(updates_a), torch.cat(updates_b)
    gap, size = (update_b - update_a).norm().item(), update_a.norm().item()
    assert size > 0
    assert gap <= update_tol * size, f"the updates differ by {gap:.3g} (update size {size:.3g})"


@pytest.mark.slow
def test_channels_last_trains_like_the_plain_layout_and_saves_plain_checkpoints(tmp_path):
    config = tiny_config(tmp_path, VQGAN)
    plain = two_steps(config, tmp_path, [], "plain")
    channels_last = two_steps(config, tmp_path, ["run.channels_last=true"], "channels-last")
    run = channels_last[0]
    conv = run.model.encoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert run.discriminator is not None
    assert_same_training(plain, channels_last, rtol=1e-4, atol=1e-6, update_tol=0.02)

    run.run_dir = tmp_path / "channels-last-run"
    save(run, ["last"])  # the runner's own checkpoint, restored into a plain-layout run
    plain_run = plain[0]
    restore(plain_run, run.run_dir)
    assert plain_run.step == 2
    for key, value in plain_run.model.state_dict().items():
        torch.testing.assert_close(value, run.model.state_dict()[key].contiguous(), rtol=0, atol=0, msg=key)
    assert plain_run.model.encoder.conv_in.weight.is_contiguous()


@pytest.mark.parametrize("impl", ["for-loop", "foreach", "fused"])
def test_optimizer_impl_reaches_adam_and_gives_the_same_update(tmp_path, impl):
    config = tiny_config(tmp_path)
    plain = two_steps(config, tmp_path, [], "auto")
    other = two_steps(config, tmp_path, [f"train.optimizer_impl={impl}"], impl)
    defaults = other[0].optimizers.model.defaults
    expected = {"for-loop": ("foreach", False), "foreach": ("foreach", True), "fused": ("fused", True)}[impl]
    assert defaults[expected[0]] is expected[1]
    assert_same_training(plain, other, rtol=1e-5, atol=1e-6, update_tol=1e-3)


def test_compile_targets_the_encoder_and_decoder_or_else_the_whole_tokenizer():
    from torch import nn

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = nn.Linear(2, 2), nn.Linear(2, 2)

    assert [name for name, _ in compiled_parts(Both())] == ["encoder", "decoder"]
    plain = nn.Linear(2, 2)
    assert compiled_parts(plain) == [("tokenizer", plain)]


def _inductor_available() -> str | None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "torch.compile's inductor needs a C compiler on the CPU (cc/gcc not found)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_inductor_available() is not None, reason=str(_inductor_available()))
def test_compiled_step_equals_the_eager_step(tmp_path):
    config = tiny_config(tmp_path)
    eager = two_steps(config, tmp_path, [], "eager")
    compiled = two_steps(config, tmp_path, ["run.compile=default"], "compiled")
    assert getattr(compiled[0].model.encoder, "_compiled_call_impl", None) is not None
    assert_same_training(eager, compiled, rtol=1e-4, atol=1e-6, update_tol=0.02)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (reduce-overhead uses CUDA graphs)")
def test_cuda_graph_compile_mode_equals_eager_on_cuda(tmp_path):
    config = tiny_config(tmp_path)
    config["run"]["device"] = "cuda"
    eager = two_steps(config, tmp_path, [], "eager")
    graphs = two_steps(config, tmp_path, ["run.compile=reduce-overhead"], "graphs")
    assert_same_training(eager, graphs, rtol=1e-3, atol=1e-6, update_tol=0.05)
