"""The combination matrix comes from the registry, skips what the run-file check refuses, and trains the rest."""

from __future__ import annotations

import json

import pytest

from lgvq_core.registry import get_registry
from lgvq_core.testing.combos import NO_LG, check_run, combinations, run_combination


@pytest.fixture
def registry(make_plugin_manager):
    make_plugin_manager(["core", "testing", "backbones", "text-encoders"])
    return get_registry()


def by_id(matrix):
    return {c.id: c for c in matrix}


def test_the_matrix_is_every_backbone_quantizer_and_guidance(registry):
    matrix = combinations(registry)

    backbones = registry.list_components("backbone")
    quantizers = registry.list_components("quantizer")
    encoders = registry.list_components("text_encoder")
    assert len(matrix) == len(backbones) * len(quantizers) * (1 + len(encoders))
    assert {(c.backbone, c.quantizer, c.text_encoder) for c in matrix} == {
        (b, q, t) for b in backbones for q in quantizers for t in [NO_LG, *encoders]
    }
    assert {"cvq", "vqct"} <= set(backbones) and {"cvq", "vqct"} <= set(quantizers)


def test_refused_pairs_are_skipped_with_the_checks_message(registry):
    matrix = by_id(combinations(registry))

    assert matrix["vqct+vq+lg-minilm"].skip == (
        "$.model.quantizer.type: backbone \"vqct\" needs the vqct quantizer (adjective and noun halves), got 'vq'; "
        'remove [model.quantizer] or set type = "vqct"'
    )
    assert matrix["vqgan+vqct+no-lg"].skip.startswith("$.text_encoder: missing: the vqct quantizer encodes its words")
    assert matrix["vqct+vqct+lg-minilm"].skip is None
    assert matrix["cvq+cvq+no-lg"].skip is None


def test_the_lg_column_uses_every_alignment_loss_and_the_components_contract_sizes(registry):
    combination = by_id(combinations(registry, steps=3))["vqgan+vq+lg-tiny-text"]

    run = combination.run_file
    assert [a["type"] for a in run["alignment"]] == ["masked-text", "relation", "semantic-nce"]
    assert run["model"]["backbone"]["ch"] == 32 and run["model"]["backbone"]["ch_mult"] == [1, 2]
    assert run["text_encoder"]["type"] == "tiny-text"
    assert run["train"]["max_steps"] == 3 and run["train"]["checkpoint_every"] == 3
    assert "alignment" not in by_id(combinations(registry))["vqgan+vq+no-lg"].run_file


def test_a_plugin_author_sees_the_combinations_with_their_components(registry):
    matrix = combinations(registry, plugins=["testing"], quantizers=["vq"])

    assert sorted(c.id for c in matrix) == sorted(
        ["tiny-ae+vq+no-lg", "tiny-ae+vq+lg-minilm", "tiny-ae+vq+lg-open_clip", "tiny-ae+vq+lg-tiny-text"]
        + [f"{b}+vq+lg-tiny-text" for b in ("cvq", "vqct", "vqgan", "vqvae")]
    )


def test_a_combination_trains_reloads_and_keeps_its_indices_in_the_codebook(registry, run_dir):
    matrix = combinations(registry, backbones=["tiny-ae"], quantizers=["vq"], text_encoders=["tiny-text"], steps=2)
    assert sorted(by_id(matrix)) == ["tiny-ae+vq+lg-tiny-text", "tiny-ae+vq+no-lg"]
    combination = by_id(matrix)["tiny-ae+vq+lg-tiny-text"]

    result = run_combination(combination, registry, run_dir)

    assert result.steps == 2
    assert {"loss", "semantic_nce_loss", "masked_text_loss", "relation_loss"} <= set(result.losses)
    assert 0 <= result.index_range[0] <= result.index_range[1] < result.codebook_size
    assert result.codebook_size == combination.run_file["model"]["quantizer"]["codebook_size"]

    metrics = result.run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    records[0]["loss"] = float("nan")
    metrics.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(
        AssertionError, match=r"tiny-ae\+vq\+lg-tiny-text: non-finite losses at step 1: \{'loss': nan\}"
    ):
        check_run(combination, result.run_dir, 2)


def test_an_unknown_plugin_or_text_encoder_is_named_and_nothing_runs(registry, capsys):
    from lgvq_core.testing.combos import main

    assert main(["--plugin", "not-installed", "--list"]) == 2
    err = capsys.readouterr().err
    assert "--plugin not-installed: no installed plugin of that name; installed: " in err and "backbones" in err
    assert main(["--text-encoder", "minilm-typo", "--list"]) == 2
    err = capsys.readouterr().err
    assert "--text-encoder minilm-typo: matches no installed text encoder; installed: " in err


def test_without_text_encoders_the_missing_lg_column_is_said(make_plugin_manager, capsys):
    from lgvq_core.testing.combos import main

    make_plugin_manager(["core", "backbones"])  # no text-encoders, and not the testing plugin's tiny-text
    assert main(["--list", "--backbone", "vqvae"]) == 0
    assert "no text encoder is installed, so the language-guided column is left out" in capsys.readouterr().err
    assert main(["--list", "--text-encoder", "minilm"]) == 2
    assert "installed: none (pip install lgvq-text-encoders)" in capsys.readouterr().err


def test_a_component_that_fails_the_contract_is_not_trained_in_any_combination(registry, capsys, monkeypatch):
    from lgvq_core.testing import combos

    def finding(entry, registry):
        return "ContractError: quant has shape (2, 8, 4, 4), z had (2, 16, 4, 4)" if entry.name == "tiny-ae" else None

    def never(*args, **kwargs):
        raise AssertionError("a combination of a component that failed the contract was trained")

    monkeypatch.setattr(combos, "contract_failure", finding)
    monkeypatch.setattr(combos, "run_combination", never)
    assert combos.main(["--plugin", "testing", "--backbone", "tiny-ae", "--steps", "1"]) == 2
    out = capsys.readouterr()
    assert "contract: backbone 'tiny-ae' fails the plugin contract: ContractError: quant has shape" in out.out
    skipped = [
        line for line in out.out.splitlines() if line.startswith("skip") and "failed the plugin contract" in line
    ]
    assert len(skipped) >= 2  # every combination with tiny-ae, one line each
    assert "nothing to run: every combination is skipped" in out.err


def test_the_contract_check_passes_a_sound_component_and_names_a_broken_one(registry, monkeypatch):
    from lgvq_core.quantizers.vq import NearestCodeQuantizer
    from lgvq_core.testing.combos import contract_failure

    assert contract_failure(registry.get("quantizer", "vq"), registry) is None
    forward = NearestCodeQuantizer.forward

    def shifted(self, z):
        import dataclasses

        out = forward(self, z)
        return dataclasses.replace(out, indices=out.indices + self.codebook_size)

    monkeypatch.setattr(NearestCodeQuantizer, "forward", shifted)
    finding = contract_failure(registry.get("quantizer", "vq"), registry)
    assert finding.startswith("ContractError: indices range over [") and "codebook_size is" in finding
