"""Captioning on frozen codes: visual tokens, the caption-only loss, overfitting, cached decoding."""

from __future__ import annotations

import pytest
import torch
from language_doubles import CAPTIONS, distinct_codes, fit, frozen_tokenizer

from lgvq_core.downstream import FrozenTokenizer
from lgvq_tasks.language.captioning import CaptioningModel
from lgvq_tasks.language.config import CaptioningConfig, LanguageModelConfig, VisualTokensConfig
from lgvq_tasks.language.decoding import beam_search, greedy_decode, greedy_decode_uncached
from lgvq_tasks.language.prefix import training_vocabulary
from lgvq_tasks.language.visual_tokens import VisualTokens
from lgvq_tasks.language.vocabulary import WordVocabulary


def small_config(**changes) -> CaptioningConfig:
    lm = LanguageModelConfig(width=32, layers=2, heads=2, dropout=0.0, max_text_length=12)
    return CaptioningConfig(language_model=changes.pop("language_model", lm), **changes)


def test_visual_tokens_are_the_frozen_codebook_vectors_plus_row_and_column_embeddings():
    tokenizer = frozen_tokenizer()
    tokens = VisualTokens(VisualTokensConfig(), tokenizer)
    codes = torch.tensor([[[3, 5], [7, 0]]])
    out = tokens(codes)  # 1 4 8
    expected = tokenizer.codebook[codes.flatten()] + torch.stack(
        [tokens.rows[i] + tokens.columns[j] for i in range(2) for j in range(2)]
    )
    torch.testing.assert_close(out[0], expected)
    assert "codebook" not in dict(tokens.named_parameters())
    out.sum().backward()
    assert tokens.rows.grad is not None


def test_positions_start_at_the_code_vectors_scale_unless_a_std_is_given():
    base = frozen_tokenizer()
    big = FrozenTokenizer(base.codebook_size, (16, 16), base.code_dim, base.codebook * 40.0)
    torch.manual_seed(0)
    tokens = VisualTokens(VisualTokensConfig(), big)
    placed = torch.cat([tokens.rows, tokens.columns]).detach()
    expected = 2.0 * float(big.codebook.std())  # twice the code vectors' scale
    assert float(placed.std()) == pytest.approx(expected, rel=0.1)
    small = VisualTokens(VisualTokensConfig(position_init_std=0.02), big)
    assert float(torch.cat([small.rows, small.columns]).detach().std()) == pytest.approx(0.02, rel=0.1)


def test_several_indices_per_position_are_concatenated_in_order():
    base = frozen_tokenizer()
    tokenizer = FrozenTokenizer(16, (2, 2), 8, base.codebook, indices_per_position=2)
    tokens = VisualTokens(VisualTokensConfig(position="none"), tokenizer)
    codes = torch.tensor([[[[1, 2], [3, 4]], [[5, 6], [7, 8]]]])  # b k h w
    out = tokens(codes)  # 1 4 16
    assert out.shape == (1, 4, 16)
    torch.testing.assert_close(out[0, 3], torch.cat([base.codebook[4], base.codebook[8]]))


def test_weight_decay_applies_to_linear_weights_only():
    model = CaptioningModel(small_config(), frozen_tokenizer(), WordVocabulary.from_texts(CAPTIONS))
    decayed, plain = model.param_groups(0.1)
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    decayed_ids = {id(p) for p in decayed["params"]}
    assert id(model.lm.decoder.blocks[0].qkv.weight) in decayed_ids
    assert id(model.lm.decoder.token_embedding.weight) not in decayed_ids
    assert id(model.visual.rows) not in decayed_ids
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_learned_code_embeddings_ignore_the_codebook_values():
    tokenizer = frozen_tokenizer()
    tokens = VisualTokens(VisualTokensConfig(embedding="learned", position="none"), tokenizer)
    codes = torch.tensor([[[3, 5], [7, 0]]])
    torch.testing.assert_close(tokens(codes)[0], tokens.learned.weight[codes.flatten()])


def test_codes_outside_the_codebook_or_of_the_wrong_grid_are_refused():
    tokens = VisualTokens(VisualTokensConfig(), frozen_tokenizer())
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        tokens(torch.tensor([[[3, 16], [0, 0]]]))
    with pytest.raises(ValueError, match="expected b x 2 x 2"):
        tokens(torch.zeros(1, 3, 3, dtype=torch.long))


def test_loss_counts_caption_tokens_and_eos_only():
    tokenizer = frozen_tokenizer()
    model = CaptioningModel(small_config(), tokenizer, WordVocabulary.from_texts(CAPTIONS))
    codes = distinct_codes(2, tokenizer)
    logits, targets, mask = model.caption_logits(codes, ["a red circle", "two"])
    assert mask.tolist() == [[True, True, True, True], [True, True, False, False]]  # words + EOS; padding out
    assert targets[1, 1] == model.lm.vocabulary.eos_id and targets[0, 3] == model.lm.vocabulary.eos_id
    # The loss is the mean CE over exactly those 6 positions, computed by hand.
    manual = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    torch.manual_seed(0)
    loss = model.training_loss({"codes": codes, "caption": ["a red circle", "two"]})["loss"]
    torch.testing.assert_close(loss, manual)


def test_overfits_four_captions_and_greedy_and_beam_reproduce_them():
    tokenizer = frozen_tokenizer()
    config = small_config()
    model = CaptioningModel(config, tokenizer, training_vocabulary(config, CAPTIONS))
    codes = distinct_codes(4, tokenizer)
    fit(model, {"codes": codes, "caption": CAPTIONS}, steps=150)
    assert model.generate(codes, decoding="greedy") == CAPTIONS
    assert model.generate(codes, decoding="beam", beam_size=3) == CAPTIONS


def _random_scratch_model(prefix_mapper: str = "mlp") -> tuple[CaptioningModel, torch.Tensor]:
    torch.manual_seed(3)
    tokenizer = frozen_tokenizer()
    model = CaptioningModel(
        small_config(prefix_mapper=prefix_mapper, prefix_length=3), tokenizer, WordVocabulary.from_texts(CAPTIONS)
    ).eval()
    return model, model.prefix(distinct_codes(5, tokenizer)).detach()


@pytest.mark.parametrize("prefix_mapper", ["mlp", "transformer"])
def test_cached_batched_greedy_equals_uncached_one_image_at_a_time(prefix_mapper):
    model, prefix = _random_scratch_model(prefix_mapper)
    cached = greedy_decode(model.lm, prefix, max_length=9)
    assert cached == greedy_decode_uncached(model.lm, prefix, max_length=9)
    assert any(len(row) >= 2 for row in cached)  # the comparison covers cached steps


def test_beam_search_with_one_beam_is_greedy():
    model, prefix = _random_scratch_model()
    assert beam_search(model.lm, prefix, beam_size=1, max_length=9) == greedy_decode(model.lm, prefix, 9)


def test_beam_search_finds_the_higher_scoring_sequence_greedy_misses():
    """A hand-made LM: greedy takes 'a' (p 0.6) then faces a flat 4-way choice; 'b' (p 0.4) leads to EOS
    with certainty. Sequence scores: a-x-EOS 0.6*0.25 = 0.15 < b-EOS 0.4 (raw sums, no length penalty)."""

    class Table(torch.nn.Module):
        eos_id = 0

        def embed(self, ids):
            return torch.nn.functional.one_hot(ids, 6).float()

        def forward(self, embeds, cache, keep_logits=None):
            seen = embeds if cache is None else torch.cat([cache, embeds], 1)
            last = seen[:, -1].argmax(-1)  # the previous token (prefix rows encode token 5: start)
            probs = torch.tensor(
                [
                    [1.0, 0, 0, 0, 0, 0],  # after EOS
                    [0.01, 0, 0.25, 0.25, 0.25, 0.24],  # after 'a': flat
                    [1.0, 0, 0, 0, 0, 0],  # 2..4: end
                    [1.0, 0, 0, 0, 0, 0],
                    [1.0, 0, 0, 0, 0, 0],
                    [0, 0.6, 0, 0, 0.4, 0],  # start: 'a' = 1 (0.6), 'b' = 4 (0.4)
                ]
            )[last]
            logits = probs.clamp_min(1e-9).log()[:, None, :]
            return logits, None, seen

        @staticmethod
        def reorder_cache(cache, rows):
            return cache.index_select(0, rows)

    prefix = torch.nn.functional.one_hot(torch.tensor([[5]]), 6).float()
    assert greedy_decode(Table(), prefix, 5) == [[1, 2]]
    assert beam_search(Table(), prefix, beam_size=2, max_length=5, length_penalty=0.0) == [[4]]


def test_scratch_vocabulary_travels_in_the_state_dict():
    tokenizer = frozen_tokenizer()
    model = CaptioningModel(small_config(), tokenizer, WordVocabulary.from_texts(CAPTIONS))
    state = model.state_dict()
    assert state["lm._extra_state"]["words"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    other = CaptioningModel(small_config(), tokenizer, WordVocabulary.from_texts(CAPTIONS[:2]))
    with pytest.raises((ValueError, RuntimeError)):
        other.load_state_dict(state)


def test_scratch_lm_without_a_vocabulary_or_captions_in_the_batch_is_a_clear_error():
    tokenizer = frozen_tokenizer()
    with pytest.raises(ValueError, match="WordVocabulary.from_texts"):
        CaptioningModel(small_config(), tokenizer)
    model = CaptioningModel(small_config(), tokenizer, WordVocabulary.from_texts(CAPTIONS))
    with pytest.raises(KeyError, match="'caption'"):
        model.training_loss({"codes": distinct_codes(2, tokenizer)})
    with pytest.raises(ValueError, match="list of 2 strings"):
        model.training_loss({"codes": distinct_codes(2, tokenizer), "caption": "one string"})


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 bytes (byte-level BPE's base alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    return [mapping[b] for b in range(256)]


def _save_tiny_gpt2(folder) -> None:
    """A random 2-layer GPT-2 with a byte-level tokenizer (256 byte symbols + EOS, no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)} | {"<|endoftext|>": len(symbols)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        eos_token_id=len(symbols),
        bos_token_id=len(symbols),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_a_local_transformers_checkpoint_trains_and_decodes_with_its_cache(tmp_path):
    _save_tiny_gpt2(tmp_path)
    tokenizer = frozen_tokenizer()
    config = small_config(
        language_model=LanguageModelConfig(kind="transformers", path=str(tmp_path), max_text_length=16)
    )
    model = CaptioningModel(config, tokenizer)
    codes = distinct_codes(2, tokenizer)
    captions = ["red", "blue"]
    fit(model, {"codes": codes, "caption": captions}, steps=60)
    assert model.generate(codes, decoding="greedy") == captions
    model.eval()
    prefix = model.prefix(codes).detach()
    assert greedy_decode(model.lm, prefix, 6) == greedy_decode_uncached(model.lm, prefix, 6)
    assert beam_search(model.lm, prefix, 1, 6) == greedy_decode(model.lm, prefix, 6)
    assert model.generate(codes, decoding="beam", beam_size=3) == captions


def test_a_scratch_vocabulary_keeps_words_seen_often_enough():
    config = small_config(language_model=LanguageModelConfig(min_word_count=2))
    vocabulary = training_vocabulary(config, CAPTIONS)
    assert vocabulary.words == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "circle", "red"]  # by count, then spelling
    assert vocabulary.encode(["A red dog."], 8).tolist() == [[4, 6, 3, 2]]
    assert (
        training_vocabulary(small_config(language_model=LanguageModelConfig(kind="transformers", path="x")), []) is None
    )


def test_a_missing_transformers_checkpoint_names_the_path(tmp_path):
    config = small_config(language_model=LanguageModelConfig(kind="transformers", path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="nope"):
        CaptioningModel(config, frozen_tokenizer())
