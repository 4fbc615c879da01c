"""``run.channels_last = "auto"``: the decision from timings (a timer stub), its cache, both layouts
computing the same, and a run that records the layout it took."""

from __future__ import annotations

import contextlib
import json

import tomli
import torch
from test_vqgan import tiny_vqgan  # two levels (f = 2), attention at 16 px

from lgvq_core.runner.layout import CACHE_FILE, MARGIN, choose_channels_last, decide, time_layouts


class StubTimer:
    """perf_counter stand-in: each timed pass of a layout lasts the given seconds (contiguous first, then
    channels-last, interleaved as time_layouts runs them)."""

    def __init__(self, contiguous: float, channels_last: float) -> None:
        self.durations = [contiguous, channels_last]
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        # calls come in pairs (start, end); the pair's index says which layout it timed
        pair, end = divmod(self.calls, 2)
        self.calls += 1
        if end:
            self.now += self.durations[pair % 2]
        return self.now


def test_the_faster_layout_wins_only_by_the_margin():
    assert decide({False: 1.0, True: 0.9}) is True
    assert decide({False: 1.0, True: 1.0 - MARGIN / 2}) is False  # within the noise: the default layout
    assert decide({False: 1.0, True: 1.2}) is False


def test_auto_measures_logs_caches_and_then_reads_the_cache(tmp_path):
    model = tiny_vqgan()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    said: list[str] = []
    timer = StubTimer(contiguous=0.010, channels_last=0.008)
    chosen = choose_channels_last(
        model, None, images, "fp32", contextlib.nullcontext, said.append, timer=timer, cache_dir=tmp_path
    )
    assert chosen is True and timer.calls == 2 * 2 * 3  # 3 interleaved repeats per layout, start + end
    assert "channels-last layout" in said[0] and "10.0 ms contiguous, 8.0 ms channels-last: 0.80x" in said[0]
    (record,) = json.loads((tmp_path / CACHE_FILE).read_text()).values()
    assert record["channels_last"] is True and record["contiguous_ms"] == 10.0

    def no_timing() -> float:
        raise AssertionError("the cached decision must not be measured again")

    again = choose_channels_last(
        model, None, images, "fp32", contextlib.nullcontext, said.append, timer=no_timing, cache_dir=tmp_path
    )
    assert again is True and "as measured for this device and model shape" in said[1]
    # another batch shape is another measurement, and here the contiguous layout wins
    other = choose_channels_last(
        model,
        None,
        torch.rand(4, 3, 32, 32),
        "fp32",
        contextlib.nullcontext,
        said.append,
        timer=StubTimer(contiguous=0.010, channels_last=0.0125),
        cache_dir=tmp_path,
    )
    assert other is False and len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2


def test_measuring_leaves_the_model_and_the_random_state_untouched():
    model = tiny_vqgan()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    state = torch.get_rng_state()
    time_layouts(model, images, contextlib.nullcontext, repeats=1)
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert next(model.parameters()).is_contiguous()


def test_both_layouts_compute_the_same_forward_and_gradients():
    model = tiny_vqgan().train()
    other = tiny_vqgan().train()
    other.load_state_dict(model.state_dict())
    other.to(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    outputs = []
    for module, x in ((model, images), (other, images.contiguous(memory_format=torch.channels_last))):
        output = module(x)
        ((output.recon - x).abs().mean() + output.quantizer_loss).backward()
        outputs.append((output, {n: p.grad for n, p in module.named_parameters()}))
    (first, grads), (second, other_grads) = outputs
    assert torch.equal(first.indices, second.indices)
    torch.testing.assert_close(second.recon, first.recon, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(other_grads[name], grad, rtol=1e-4, atol=2e-5)  # float summation order


def test_a_run_with_auto_records_the_layout_it_took(tmp_path, tiny_run_config, monkeypatch, capsys):
    from lgvq_core.run_file import load_run_file
    from lgvq_core.runner.loop import train
    from lgvq_core.testing.fixtures import write_run_file

    monkeypatch.setenv("LGVQ_CACHE_DIR", str(tmp_path / "cache"))
    tiny_run_config["run"]["channels_last"] = "auto"
    tiny_run_config["train"]["max_steps"] = 1
    result = train(load_run_file(write_run_file(tiny_run_config, tmp_path / "auto.toml")))
    resolved = tomli.loads((result.run_dir / "resolved.toml").read_text())
    assert resolved["run"]["channels_last"] in (True, False)
    assert 'run.channels_last = "auto"' in capsys.readouterr().out
    assert (tmp_path / "cache" / CACHE_FILE).is_file()
