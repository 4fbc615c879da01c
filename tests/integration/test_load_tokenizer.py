"""Loading a trained tokenizer from its run directory (lgvq_core.runner.load, lgvq_core.api)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
from test_runner import tiny_run_file

from lgvq_core.api import LoadedTokenizer, load_tokenizer
from lgvq_core.errors import CheckpointError, RunDirError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.checkpoint import resolve_checkpoint
from lgvq_core.runner.evaluate import load_trained
from lgvq_core.runner.load import BUILD_FILE, load_tokenizer_run
from lgvq_core.runner.loop import train

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("load")
    path = tiny_run_file(tmp_path)
    return train(load_run_file(path), source_text=path.read_text()).run_dir


def _kinds(component_builds) -> dict[str, int]:
    """How many components of each kind were built."""
    return dict(Counter(kind for kind, _ in component_builds))


def _images(count: int = 3) -> torch.Tensor:
    torch.manual_seed(7)
    return torch.rand(count, 3, 32, 32) * 2 - 1


def test_a_tokenizer_run_records_what_its_tokenizer_is_built_for(trained_run):
    assert (trained_run / BUILD_FILE).read_text().replace(" ", "").startswith('{\n"image_size":32')


def test_load_tokenizer_builds_the_tokenizer_alone(trained_run, component_builds):
    tokenizer = load_tokenizer(trained_run)
    assert _kinds(component_builds) == {
        "quantizer": 1,
        "backbone": 1,
    }  # no dataset, text encoder, alignment or discriminator
    assert isinstance(tokenizer, LoadedTokenizer)
    assert tokenizer.checkpoint == resolve_checkpoint(trained_run, "best") and tokenizer.step == 3  # best val at 3
    assert tokenizer.image_size == 32 and tokenizer.in_channels == 3
    assert not any(p.requires_grad for p in tokenizer.module.parameters()) and not tokenizer.module.training


def test_encode_embed_decode_are_the_trained_tokenizers(trained_run):
    handle = load_tokenizer(trained_run, checkpoint="last")
    model, _, _ = load_trained(trained_run, "last")  # the evaluation path: every part of the run rebuilt
    images = _images()
    codes = handle.encode(images)
    with torch.no_grad():
        output = model.tokenizer(images)
    assert codes.dtype == torch.long and codes.shape == (3, 8, 8)
    assert torch.equal(codes, output.indices)
    torch.testing.assert_close(handle.embed(codes), output.quant, rtol=0, atol=1e-6)
    torch.testing.assert_close(handle.decode(codes), output.recon, rtol=0, atol=1e-6)
    assert torch.equal(handle.codebook, model.tokenizer.quantizer.codebook.detach())
    assert handle.codebook.shape == (32, 16)


def test_bad_inputs_are_refused_with_what_to_do(trained_run):
    handle = load_tokenizer(trained_run)
    with pytest.raises(ValueError, match=r"B×3×H×W.*unsqueeze\(0\)"):
        handle.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="trained on 32×32 images, got 16×16"):
        handle.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"lie in \[0, 32\)"):
        handle.decode(torch.full((1, 8, 8), 32))
    with pytest.raises(ValueError, match="integer indices"):
        handle.decode(torch.zeros(1, 8, 8))


def test_a_run_without_the_build_record_is_sized_from_its_validation_split(trained_run, component_builds, tmp_path):
    import shutil

    copy = tmp_path / "older-run"
    shutil.copytree(trained_run, copy)
    (copy / BUILD_FILE).unlink()
    handle = load_tokenizer(copy)
    assert _kinds(component_builds) == {"dataset": 1, "quantizer": 1, "backbone": 1}
    assert handle.image_size == 32
    assert torch.equal(handle.encode(_images()), load_tokenizer(trained_run).encode(_images()))


def test_a_pinned_sha256_and_a_non_run_are_refused(trained_run, tmp_path):
    run = load_tokenizer_run(trained_run, "best")
    assert load_tokenizer_run(trained_run, "best", sha256=run.checkpoint.sha256).step == run.step
    with pytest.raises(CheckpointError, match=r"differs from \$\.tokenizer\.sha256 = 0+; .*Remove tokenizer\.sha256"):
        load_tokenizer_run(trained_run, "best", sha256="0" * 64)
    with pytest.raises(RunDirError, match="not a run directory"):
        load_tokenizer(tmp_path)


def test_the_readme_snippet_runs_as_written(trained_run):
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## A trained tokenizer from Python", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'load_tokenizer("runs/quickstart/<id>"' in snippet
    namespace = {"images": _images(2)}
    exec(snippet.replace("runs/quickstart/<id>", str(trained_run)), namespace)  # noqa: S102 - the README's own code
    assert namespace["codes"].shape == (2, 8, 8) and namespace["recon"].shape == (2, 3, 32, 32)


def test_importing_the_api_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lgvq_core.api; assert 'torch' not in sys.modules, 'torch was imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


@pytest.mark.parametrize("content", ['{"image_size": 32, "in_chan', "[]", '{"image_size": 32}'])
def test_a_cut_or_foreign_build_record_falls_back_to_the_validation_split(
    trained_run, component_builds, tmp_path, content
):
    import shutil

    copy = tmp_path / "damaged-run"
    shutil.copytree(trained_run, copy)
    (copy / BUILD_FILE).write_text(content)  # a write cut short, or a file that is not the record
    handle = load_tokenizer(copy)
    assert _kinds(component_builds) == {"dataset": 1, "quantizer": 1, "backbone": 1}
    assert handle.image_size == 32 and torch.equal(
        handle.encode(_images()), load_tokenizer(trained_run).encode(_images())
    )
