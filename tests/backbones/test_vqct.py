"""vqct (docs/method.md: VQCT): word prior, tagging, GCN codebook, two-half quantisation, backbone."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from lgvq_backbones.vqct.config import VQCTConfig
from lgvq_backbones.vqct.gcn import GCN, normalized_adjacency
from lgvq_backbones.vqct.quantizer import VQCTQuantizer, build_vqct_quantizer
from lgvq_backbones.vqct.tagging import load_tagger, nltk_tagger, textblob_tagger
from lgvq_backbones.vqct.word_prior import (
    WordCounts,
    WordGraph,
    WordPrior,
    build_word_prior,
    count_tagged,
    read_word_list,
    select_words,
)
from lgvq_core.context import BuildContext
from lgvq_core.testing.config import TinyTextConfig
from lgvq_core.testing.doubles import TinyText

CAPTIONS = [
    "a small red car parked next to an old building",
    "the red car is near two green trees",
    "this bird has a yellow belly and black wings",
    "a black bird with yellow wings sits on a green tree",
    "a red car and a black bird",
]


def _tiny_text() -> TinyText:
    return TinyText(TinyTextConfig(width=16, vocab_size=256))


# -- GCN ----------------------------------------------------------------------------------------
def test_normalized_adjacency_of_a_three_node_path_matches_the_hand_computation():
    # 0 - 1 - 2: A + I = [[1,1,0],[1,1,1],[0,1,1]], degrees (2, 3, 2), Â_ij = (A+I)_ij / sqrt(d_i d_j)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    adjacency = normalized_adjacency(edge_index, torch.ones(4), 3).to_dense()
    r6 = 1 / math.sqrt(6)
    expected = torch.tensor([[1 / 2, r6, 0.0], [r6, 1 / 3, r6], [0.0, r6, 1 / 2]])
    torch.testing.assert_close(adjacency, expected)


def test_normalized_adjacency_sums_edge_weights_and_keeps_isolated_nodes():
    # Edge 0-1 seen twice (weight 2), node 2 alone: A + I = [[1,2,0],[2,1,0],[0,0,1]], degrees (3, 3, 1)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    adjacency = normalized_adjacency(edge_index, torch.tensor([2.0, 2.0]), 3)
    assert adjacency.is_sparse
    expected = torch.tensor([[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(adjacency.to_dense(), expected)


def test_gcn_is_two_propagations_with_relu_and_dropout_only_in_training():
    torch.manual_seed(0)
    gcn = GCN(4, 6, 3)
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    adjacency = normalized_adjacency(edge_index, torch.ones(4), 3)
    dense = adjacency.to_dense()
    x = torch.randn(3, 4)
    hidden = torch.relu(dense @ x @ gcn.first.weight.t() + gcn.first.bias)
    expected = dense @ hidden @ gcn.second.weight.t() + gcn.second.bias
    gcn.eval()
    torch.testing.assert_close(gcn(x, adjacency), expected)
    gcn.train()
    assert not torch.allclose(gcn(x, adjacency), gcn(x, adjacency))  # a fresh dropout mask each call
    torch.testing.assert_close(gcn(x, adjacency, dropout=False), expected)


def test_gcn_starts_with_glorot_weights_and_zero_biases():
    gcn = GCN(512, 256, 256)
    bound = math.sqrt(6 / (512 + 256))
    assert gcn.first.weight.abs().max() <= bound and gcn.first.bias.abs().sum() == 0
    assert gcn.second.bias.abs().sum() == 0


# -- tagging and word counting --------------------------------------------------------------------
def test_textblob_tagger_finds_adjectives_and_singular_noun_lemmas():
    tagged = textblob_tagger(["A small red car", "this bird has black wings and two geese"])
    first = {token: (tag, lemma) for token, tag, lemma in tagged[0]}
    assert first["small"][0] == "JJ" and first["red"][0] == "JJ" and first["car"] == ("NN", "car")
    second = {token: (tag, lemma) for token, tag, lemma in tagged[1]}
    assert second["wings"] == ("NNS", "wing") and second["geese"] == ("NNS", "goose")
    assert second["black"][0] == "JJ" and second["has"][0].startswith("VB")


def test_words_are_counted_and_only_adjacent_adjective_noun_bigrams_make_edges():
    counts = WordCounts()
    counts.add([("a", "DT"), ("small", "JJ"), ("red", "JJ"), ("cars", "NNS", "car")])
    counts.add([("the", "DT"), ("car", "NN"), ("is", "VBZ"), ("red", "JJ")])
    counts.add([("red", "JJ"), ("car", "NN"), ("red", "JJ"), (",", ","), ("bird", "NN")])
    assert counts.adjectives == {"small": 1, "red": 4}
    assert counts.nouns == {"car": 3, "bird": 1}
    # "small red car" links only red-car; "car is red" and "red , bird" link nothing.
    assert counts.bigrams == {("red", "car"): 2}


def test_frequency_threshold_keeps_words_seen_more_than_min_frequency_times():
    counts = WordCounts()
    for _ in range(3):
        counts.add([("red", "JJ"), ("car", "NN")])
    counts.add([("big", "JJ"), ("car", "NN")])
    counts.add([("big", "JJ"), ("dog", "NN")])
    graph = select_words(counts, min_frequency=2)  # > 2: red (3), car (4); big (2) and dog (1) go
    assert (graph.adjectives, graph.nouns) == (["red"], ["car"])
    assert graph.edges == {("red", "car"): 3.0}  # weight = bigram count; big-car dropped with "big"
    assert select_words(counts, min_frequency=2, binary_edges=True).edges == {("red", "car"): 1.0}
    graph = select_words(counts, min_frequency=1)
    assert graph.adjectives == ["red", "big"] and graph.nouns == ["car"]  # by frequency


def test_a_word_used_as_adjective_and_noun_gets_two_nodes():
    counts = WordCounts()
    counts.add([("light", "JJ"), ("blue", "NN")])
    counts.add([("blue", "JJ"), ("light", "NN")])
    graph = select_words(counts, min_frequency=0)
    index, weight = graph.edge_index()
    assert graph.adjectives == ["blue", "light"] and graph.nouns == ["blue", "light"]
    # light(adj, node 1) - blue(noun, node 2); blue(adj, node 0) - light(noun, node 3); both directions
    assert sorted(map(tuple, index.t().tolist())) == [(0, 3), (1, 2), (2, 1), (3, 0)]
    assert weight.tolist() == [1.0] * 4


def test_count_tagged_runs_the_tagger_on_every_caption():
    counts = count_tagged(CAPTIONS, textblob_tagger)
    assert counts.nouns["car"] == 3 and counts.adjectives["red"] == 3
    assert counts.bigrams[("red", "car")] == 3 and counts.bigrams[("black", "bird")] == 2


def custom_tagger(captions):
    """Every word an adjective except the last, a noun."""
    tagged = []
    for caption in captions:
        words = caption.split()
        tagged.append([(w, "JJ") for w in words[:-1]] + [(words[-1], "NN")])
    return tagged


def test_tagger_can_be_any_importable_callable():
    tagger = load_tagger(f"{__name__}:custom_tagger")
    assert tagger is sys.modules[__name__].custom_tagger
    counts = count_tagged(["shiny red ball"], tagger)
    assert counts.bigrams == {("red", "ball"): 1}


@pytest.mark.parametrize(
    ("name", "message"),
    [("spacy", "module:callable"), ("no_such_module_x:tag", "cannot import"), (f"{__name__}:missing", "no attribute")],
)
def test_bad_tagger_names_are_rejected_with_the_reason(name, message):
    with pytest.raises(ValueError, match=message):
        load_tagger(name)


def test_nltk_tagger_without_its_data_says_what_to_install(monkeypatch):
    import nltk

    def missing(resource):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", missing)
    with pytest.raises(RuntimeError, match=r"averaged_perceptron_tagger_eng.*does not download.*textblob"):
        nltk_tagger(["a red car"])


# -- word-list files ------------------------------------------------------------------------------
def test_json_word_list_gives_nodes_in_file_order_and_weighted_edges(tmp_path):
    path = tmp_path / "words.json"
    path.write_text(
        json.dumps({"adjectives": ["red", "big"], "nouns": ["car"], "edges": [["red", "car"], ["big", "car", 4]]})
    )
    graph = read_word_list(path)
    assert (graph.adjectives, graph.nouns) == (["red", "big"], ["car"])
    assert graph.edges == {("red", "car"): 1.0, ("big", "car"): 4.0}


def test_tsv_word_list_reads_nodes_and_edges(tmp_path):
    path = tmp_path / "words.tsv"
    path.write_text("# adjectives and nouns\nred\tJJ\ncar\tNN\ntrees\tNNS\n\nred\tcar\t3\n")
    graph = read_word_list(path)
    assert (graph.adjectives, graph.nouns, graph.edges) == (["red"], ["car", "trees"], {("red", "car"): 3.0})


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("w.tsv", "red\tVB\n", r"w.tsv:1: expected"),
        ("w.tsv", "red\tJJ\ncar\tNN\nred\tcar\tmany\n", r"w.tsv:3: edge weight"),
        (
            "w.json",
            '{"adjectives": ["red"], "nouns": ["car"], "edges": [["blue", "car"]]}',
            "adjective that is not listed",
        ),
        ("w.json", '{"adjectives": ["red", "red"], "nouns": []}', "listed twice"),
        ("w.json", '{"nouns": []}', '"adjectives" and "nouns"'),
        ("w.json", "{oops", "invalid JSON at line 1"),
    ],
)
def test_bad_word_lists_are_reported_with_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_word_list(path)


# -- building the prior -------------------------------------------------------------------------
def _prior_options(**overrides):
    options = dict(
        text_encoder=_tiny_text(),
        captions=lambda: list(CAPTIONS),
        word_list=None,
        tagger="textblob",
        min_frequency=1,
        binary_edges=False,
        adjective_prompt="a photo of {word} object",
        noun_prompt="a photo of {word}",
        cache_dir=None,
        log=lambda message: None,
    )
    options.update(overrides)
    return options


def test_prior_word_vectors_are_sentence_embeddings_of_the_prompts():
    options = _prior_options()
    prior = build_word_prior(**options)
    graph = prior.graph
    assert graph.adjectives == ["black", "red", "green", "yellow"]  # seen > 1 time, most frequent first
    assert graph.nouns == ["bird", "car", "tree", "wing"]
    assert graph.edges[("red", "car")] == 3.0 and ("green", "tree") in graph.edges
    encoder = options["text_encoder"]
    expected = encoder.encode(["a photo of black object", "a photo of bird"]).sentence
    torch.testing.assert_close(prior.vectors[[0, 4]], expected)
    assert prior.vectors.shape == (8, 16)


def test_prior_is_cached_and_rebuilt_only_when_an_input_changes(tmp_path):
    calls = []

    def counting(captions):
        calls.append(len(captions))
        return textblob_tagger(captions)

    module = sys.modules[__name__]
    module.counting_tagger = counting
    options = _prior_options(cache_dir=str(tmp_path), tagger=f"{__name__}:counting_tagger")
    first = build_word_prior(**options)
    second = build_word_prior(**options)
    assert calls == [len(CAPTIONS)]  # the second build came from the cache
    assert second.graph == first.graph
    torch.testing.assert_close(second.vectors, first.vectors)
    words = json.loads(next(tmp_path.glob("vqct-words-*.json")).read_text())
    assert words["adjectives"] == first.graph.adjectives and ["red", "car", 3.0] in words["edges"]
    build_word_prior(**{**options, "min_frequency": 0})
    build_word_prior(**{**options, "captions": lambda: [*CAPTIONS, "a blue car"]})
    assert len(calls) == 3


def test_prior_from_a_word_list_file_needs_no_captions(tmp_path):
    path = tmp_path / "words.json"
    path.write_text(json.dumps({"adjectives": ["red", "tiny"], "nouns": ["car"], "edges": [["red", "car"]]}))
    prior = build_word_prior(**_prior_options(word_list=str(path), captions=None))
    assert (prior.graph.adjectives, prior.graph.nouns) == (["red", "tiny"], ["car"])
    assert prior.vectors.shape == (3, 16)


def test_prior_without_enough_words_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"0 adjectives and 0 nouns.*lower min_frequency or give a word_list"):
        build_word_prior(**_prior_options(min_frequency=10))


def test_prior_needs_a_text_encoder():
    with pytest.raises(ValueError, match=r"add a \[text_encoder\]"):
        build_word_prior(**_prior_options(text_encoder=None))


# -- quantisation -------------------------------------------------------------------------------
def _identity_quantizer(
    codes: torch.Tensor, num_adjectives: int, topk: int = 2, beta_placement="codebook"
) -> VQCTQuantizer:
    """A quantizer whose GCN reproduces its (non-negative) word vectors: no edges (Â = I), W = I, b = 0."""
    words = [f"w{i}" for i in range(codes.shape[0])]
    graph = WordGraph(words[:num_adjectives], words[num_adjectives:], {})
    width = codes.shape[1]
    quantizer = VQCTQuantizer(
        WordPrior(graph, codes), dim=2 * width, hidden_dim=width, adjective_topk=topk, beta_placement=beta_placement
    )
    with torch.no_grad():
        for layer in (quantizer.gcn.first, quantizer.gcn.second):
            layer.weight.copy_(torch.eye(width))
            layer.bias.zero_()
    return quantizer.eval()


ADJECTIVE_CODES = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]
NOUN_CODES = [[0.0, 2.0], [2.0, 0.0]]


def _hand_quantizer(**kwargs) -> VQCTQuantizer:
    return _identity_quantizer(torch.tensor(ADJECTIVE_CODES + NOUN_CODES), 4, **kwargs)


def test_adjective_half_averages_the_two_nearest_codes_and_noun_half_takes_the_nearest():
    quantizer = _hand_quantizer()
    # position 0: adjective half (0.9, 0.2) -> nearest codes 1 (1,0) then 0 (0,0); noun half (1.5, 0.1) -> noun 1
    # position 1: adjective half (2.5, 2.0) -> nearest 3 (3,3) then 1 (1,0);      noun half (0.1, 3.0) -> noun 0
    z = torch.tensor([[0.9, 0.2, 1.5, 0.1], [2.5, 2.0, 0.1, 3.0]]).t().reshape(1, 4, 1, 2)
    out = quantizer(z)
    assert out.indices.shape == (1, 3, 1, 2)
    assert out.indices[0, :, 0].t().tolist() == [[1, 0, 4 + 1], [3, 1, 4 + 0]]
    expected = torch.tensor([[0.5, 0.0, 2.0, 0.0], [2.0, 1.5, 0.0, 2.0]]).t().reshape(1, 4, 1, 2)
    torch.testing.assert_close(out.quant, expected)
    torch.testing.assert_close(quantizer.decode_indices(out.indices), expected)


def test_each_half_gets_the_legacy_vq_loss_and_the_losses_add_up():
    quantizer = _hand_quantizer()
    z = torch.tensor([[0.9, 0.2, 1.5, 0.1], [2.5, 2.0, 0.1, 3.0]]).t().reshape(1, 4, 1, 2).requires_grad_(True)
    out = quantizer(z)
    flat = z.detach()[0, :, 0].t()
    codes = torch.tensor([[0.5, 0.0, 2.0, 0.0], [2.0, 1.5, 0.0, 2.0]])
    adjective_mse = ((flat[:, :2] - codes[:, :2]) ** 2).mean()
    noun_mse = ((flat[:, 2:] - codes[:, 2:]) ** 2).mean()
    assert out.loss.item() == pytest.approx(1.25 * (adjective_mse + noun_mse).item(), rel=1e-6)
    out.loss.backward()
    # legacy placement: the full weight on ||sg(z_q) - z||², so dL/dz = 2 (z - z_q) / numel per half
    torch.testing.assert_close(z.grad[0, :, 0].t(), 2 * (flat - codes) / 4)


def test_commitment_placement_moves_beta_to_the_encoder_term():
    quantizer = _hand_quantizer(beta_placement="commitment")
    z = torch.tensor([[0.9, 0.2, 1.5, 0.1]]).t().reshape(1, 4, 1, 1).requires_grad_(True)
    quantizer(z).loss.backward()
    flat = z.detach()[0, :, 0, 0]
    torch.testing.assert_close(z.grad[0, :, 0, 0], 0.25 * 2 * (flat - torch.tensor([0.5, 0.0, 2.0, 0.0])) / 2)


def test_codebook_rows_are_padded_into_the_space_of_quant():
    quantizer = _hand_quantizer()
    codebook = quantizer.codebook
    assert codebook.shape == (6, 4) and quantizer.codebook_size == 6 and quantizer.dim == 4
    torch.testing.assert_close(codebook[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # adjective [e, 0]
    torch.testing.assert_close(codebook[5], torch.tensor([0.0, 0.0, 2.0, 0.0]))  # noun [0, e]
    indices = torch.tensor([1, 0, 5]).view(1, 3, 1, 1)
    composed = sum(w * codebook[i] for w, i in zip(quantizer.index_weights, [1, 0, 5], strict=True))
    torch.testing.assert_close(quantizer.decode_indices(indices)[0, :, 0, 0], composed)
    single = quantizer.decode_indices(torch.tensor([[[1, 5]]]))  # one code per position
    torch.testing.assert_close(single[0, :, 0].t(), codebook[[1, 5]])


def test_decode_indices_rejects_indices_in_the_wrong_slots():
    quantizer = _hand_quantizer()
    with pytest.raises(ValueError, match=r"noun indices \(slot 2\) must lie in \[4, 6\)"):
        quantizer.decode_indices(torch.tensor([1, 0, 2]).view(1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"B×3×h×w"):
        quantizer.decode_indices(torch.zeros(1, 2, 1, 1, dtype=torch.long))


def test_every_code_is_recomputed_by_the_gcn_so_only_its_weights_train():
    torch.manual_seed(0)
    prior = build_word_prior(**_prior_options())
    quantizer = VQCTQuantizer(prior, dim=16, hidden_dim=8)
    trainable = {name for name, p in quantizer.named_parameters() if p.requires_grad}
    assert trainable == {"gcn.first.weight", "gcn.first.bias", "gcn.second.weight", "gcn.second.bias"}
    assert {"word_vectors", "edge_index", "edge_weight"} <= set(dict(quantizer.named_buffers()))
    out = quantizer(torch.randn(2, 16, 3, 3))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in quantizer.parameters())
    quantizer.zero_grad()
    quantizer.codebook.sum().backward()  # the codebook property is differentiable too
    assert quantizer.gcn.first.weight.grad.abs().sum() > 0


def test_training_forward_draws_gcn_dropout_and_eval_is_deterministic():
    torch.manual_seed(0)
    quantizer = VQCTQuantizer(build_word_prior(**_prior_options()), dim=16, hidden_dim=8)
    z = torch.randn(2, 16, 3, 3)
    assert not torch.equal(quantizer(z).quant, quantizer(z).quant)
    quantizer.eval()
    torch.testing.assert_close(quantizer(z).quant, quantizer(z).quant)


def test_stats_report_each_half_and_the_joint_table():
    quantizer = _hand_quantizer()
    z = torch.tensor([[0.9, 0.2, 1.5, 0.1], [2.5, 2.0, 0.1, 3.0]]).t().reshape(1, 4, 1, 2)
    stats = quantizer(z).stats
    assert stats["adjective_usage"].item() == pytest.approx(3 / 4)  # codes 0, 1, 3
    assert stats["noun_usage"].item() == pytest.approx(1.0)
    assert stats["usage"].item() == pytest.approx(5 / 6)


def test_adjective_topk_cannot_exceed_the_adjectives():
    with pytest.raises(ValueError, match="only 1 adjectives"):
        _identity_quantizer(torch.ones(2, 2), 1, topk=2)


# -- config ------------------------------------------------------------------------------------
def test_config_defaults_follow_vqct():
    config = VQCTConfig()
    assert (config.dim, config.hidden_dim, config.dropout, config.adjective_topk) == (512, 256, 0.5, 2)
    assert (config.min_frequency, config.beta_placement, config.edge_weights) == (10, "codebook", "count")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dim": 511}, "even"),
        ({"tagger": "nltk-ish"}, "module:function"),
        ({"noun_prompt": "a photo of {}"}, "{word}"),
    ],
)
def test_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        VQCTConfig(**options)


def _run_file(**model):
    from lgvq_core.testing.fixtures import TINY_RUN

    run = json.loads(json.dumps(TINY_RUN))
    run["model"] = model
    run["alignment"] = []
    return run


def test_vqct_backbone_defaults_to_the_vqct_quantizer_and_rejects_another(plugin_manager_with_backbones):
    from lgvq_core.errors import ConfigError
    from lgvq_core.run_file import validate_run_file as validate

    loaded = validate(_run_file(backbone={"type": "vqct"}))
    assert loaded.config.model.quantizer.type == "vqct"
    with pytest.raises(ConfigError, match=r'\$\.model\.quantizer\.type: backbone "vqct" needs the vqct quantizer'):
        validate(_run_file(backbone={"type": "vqct"}, quantizer={"type": "vq"}))
    no_text = _run_file(backbone={"type": "vqct"})
    del no_text["text_encoder"]
    with pytest.raises(ConfigError, match=r"\$\.text_encoder: missing: the vqct quantizer"):
        validate(no_text)


def test_the_loader_rebuilds_a_vqct_tokenizer_with_its_text_encoder_and_captions(
    plugin_manager_with_backbones, tmp_path, monkeypatch, component_builds
):
    from collections import Counter

    from lgvq_core import text_feature_cache
    from lgvq_core.run_file import validate_run_file as validate
    from lgvq_core.runner.load import build_tokenizer, uses_text_at_build

    quantizer = {"type": "vqct", "dim": 16, "hidden_dim": 8, "min_frequency": 0}
    config = validate(_run_file(backbone={"type": "vqct", **TINY_VQGAN}, quantizer=quantizer)).config
    assert uses_text_at_build(config)
    assert not uses_text_at_build(validate(_run_file(backbone={"type": "tiny-ae", "hidden": 8})).config)
    monkeypatch.setattr(text_feature_cache, "cache_root", lambda: tmp_path)
    tokenizer = build_tokenizer(config, "cpu", lambda m: None, {"image_size": 32, "in_channels": 3})
    # the word prior needs the text encoder and the training captions (one split), nothing else
    builds = Counter(kind for kind, _ in component_builds)
    assert dict(builds) == {"text_encoder": 1, "dataset": 1, "quantizer": 1, "backbone": 1}
    assert tokenizer.quantizer.codebook_size > 0


@pytest.fixture
def plugin_manager_with_backbones(make_plugin_manager):
    return make_plugin_manager(["core", "testing", "backbones"])


# -- the whole backbone ----------------------------------------------------------------------------
TINY_VQGAN = {
    "ch": 8,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [8],
    "z_channels": 8,
    "norm_groups": 4,
}


def test_vqct_backbone_trains_end_to_end_on_a_tiny_config(plugin_manager_with_backbones, tmp_path):
    from lgvq_core.registry import build

    torch.manual_seed(0)
    messages = []
    context = BuildContext(
        image_size=16,
        text_encoder=_tiny_text(),
        train_captions=lambda: list(CAPTIONS),
        cache_dir=str(tmp_path),
        log=messages.append,
    )
    table = {"type": "vqct", "dim": 16, "hidden_dim": 8, "min_frequency": 1}
    context.quantizer = build("quantizer", table, "$.model.quantizer", context)
    model = build("backbone", {"type": "vqct", **TINY_VQGAN}, "$.model.backbone", context)
    assert model.quant_conv.out_channels == 16 and model.post_quant_conv.in_channels == 16
    assert any("vqct: word prior from 5 captions" in m for m in messages)

    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(images)
    assert out.recon.shape == images.shape and out.quant.shape == (2, 16, 8, 8)
    assert out.indices.shape == (2, 3, 8, 8)
    terms = model.generator_loss(images, out, step=0, discriminator=None)
    terms["total"].backward()
    gcn = model.quantizer.gcn
    assert gcn.first.weight.grad.abs().sum() > 0 and gcn.second.bias.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
        torch.testing.assert_close(model.decode_indices(out.indices), model.decode(out.quant))


def test_factory_reports_prior_problems_as_config_errors_naming_the_key():
    from lgvq_core.errors import ConfigError

    context = BuildContext(text_encoder=_tiny_text(), train_captions=lambda: list(CAPTIONS), log=lambda m: None)
    with pytest.raises(ConfigError, match=r"\$\.model\.quantizer\.min_frequency: .*0 adjectives"):
        build_vqct_quantizer(VQCTConfig(dim=16, hidden_dim=8), context)
    with pytest.raises(ConfigError, match=r"\$\.model\.quantizer\.adjective_topk: 9 adjective codes"):
        build_vqct_quantizer(VQCTConfig(dim=16, hidden_dim=8, min_frequency=1, adjective_topk=9), context)
    with pytest.raises(ConfigError, match=r"\$\.text_encoder: .*needs a text encoder"):
        build_vqct_quantizer(VQCTConfig(min_frequency=1), BuildContext(train_captions=lambda: list(CAPTIONS)))
    with pytest.raises(ConfigError, match=r"\$\.model\.quantizer\.tagger: tagging the captions"):
        build_vqct_quantizer(VQCTConfig(min_frequency=1, tagger=f"{__name__}:broken_tagger"), context)


def broken_tagger(captions):
    return []
