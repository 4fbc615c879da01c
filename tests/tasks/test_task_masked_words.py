"""Masked words: which tokens are hidden, what the decoder reads under each protocol, Recall@1 per token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from task_doubles import IdentityTokenizer, ListData, id_images, image_ids, trained_model
from torch import nn

from lgvq_core.alignment.loss_configs import MaskedTextConfig
from lgvq_core.alignment.masked_text import MaskedTextLoss
from lgvq_core.text_encoder import TextFeatures
from lgvq_tasks.config import MaskedWordsConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.masked_words import MaskedWordsTask, choose_masks, masked_predictions, visible_rows


def word_masks(word_counts: list[int], length: int) -> torch.Tensor:
    """B×L word masks: SOT, then n word tokens, then EOT and padding."""
    mask = torch.zeros(len(word_counts), length, dtype=torch.bool)
    for row, count in enumerate(word_counts):
        mask[row, 1 : 1 + count] = True
    return mask


def test_mask_k_hides_k_distinct_word_tokens_and_skips_short_captions():
    word_mask = word_masks([5, 2, 3], 8)
    masked, eligible = choose_masks(word_mask, 3, 28, torch.Generator().manual_seed(0))
    assert eligible.tolist() == [True, False, True]
    assert masked.sum(1).tolist() == [3, 0, 3]
    assert not (masked & ~word_mask).any()  # never a special or padding token


def test_masks_stay_among_the_first_max_position_word_tokens():
    word_mask = word_masks([30], 32)
    generator = torch.Generator().manual_seed(0)
    chosen = set()
    for _ in range(300):
        masked, _ = choose_masks(word_mask, 1, 28, generator)
        chosen.add(int(masked[0].nonzero()))
    # word tokens sit at positions 1..30; the first 28 of them are positions 1..28
    assert chosen == set(range(1, 29))


class RecordingEncoder:
    """Records the ids it is asked to encode; states are the ids themselves as one column."""

    mask_placeholder_id = 3

    def __init__(self) -> None:
        self.encoded = None

    def encode_ids(self, ids, pad_mask):
        self.encoded = ids.clone()
        return ids.float().unsqueeze(-1), None

    def embed_ids(self, ids):
        return -ids.float().unsqueeze(-1)


def test_leak_free_encodes_the_masked_caption_and_official_reuses_the_unmasked_states():
    ids = torch.tensor([[1, 10, 11, 12, 2, 0]])
    text = TextFeatures(
        ids=ids,
        pad_mask=ids != 0,
        word_mask=(ids > 3),
        token_states=torch.full((1, 6, 1), 7.0),
        sentence=torch.zeros(1, 1),
    )
    masked = torch.tensor([[False, False, True, False, False, False]])
    encoder = RecordingEncoder()
    head = SimpleNamespace(config=SimpleNamespace(text_input="unmasked-contextual"))

    assert torch.equal(visible_rows(head, "official", text, masked, encoder), text.token_states)
    assert encoder.encoded is None  # the official protocol reads the cached unmasked features

    rows = visible_rows(head, "leak-free", text, masked, encoder)
    assert encoder.encoded.tolist() == [[1, 10, 3, 12, 2, 0]]  # the hidden word never reaches the encoder
    assert rows[0, :, 0].tolist() == [1, 10, 3, 12, 2, 0]

    head.config.text_input = "token-embedding"  # a head trained on embedding rows gets embedding rows
    assert visible_rows(head, "leak-free", text, masked, encoder)[0, :, 0].tolist() == [-1, -10, -11, -12, -2, 0]


class CodeReadingHead(nn.Module):
    """A masked-text head that predicts, at position l, the token whose embedding the image's code l holds."""

    def __init__(self, length: int, width: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(text_input="unmasked-contextual")
        self.mask_embedding = nn.Parameter(torch.zeros(length, width))
        self.decoder_rows = lambda rows, masked, pad: torch.where(masked.unsqueeze(-1), self.mask_embedding, rows)
        self.decode = lambda hidden, codes, pad_mask: codes[:, 1 : 1 + hidden.shape[1]]
        self.head = lambda hidden, table: F.normalize(hidden, dim=-1) @ F.normalize(table, dim=-1).T


class CodeTableViT(nn.Module):
    """Code-ViT stand-in: image i's tokens are row i of ``table`` (B×(1+L)×W)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, quant: torch.Tensor) -> torch.Tensor:
        return self.table[image_ids(quant)]


def code_reading_model(captions: list[str], encoder, batch_size: int):
    ids = encoder.tokenize(captions)[0]
    length, width = ids.shape[1], encoder.width
    table = torch.cat([torch.zeros(len(captions), 1, width), encoder.token_embedding[ids]], dim=1)
    alignment = nn.Module()
    alignment.code_vit = CodeTableViT(table)
    alignment.losses = nn.ModuleDict({"masked-text": CodeReadingHead(length, width)})
    return trained_model(IdentityTokenizer(), alignment, encoder, batch_size=batch_size), ids


def test_recall_is_per_masked_token_with_the_image_and_drops_with_shuffled_images(text_encoder, tmp_path):
    captions = ["red circle", "red square", "green square"]
    model, ids = code_reading_model(captions, text_encoder, batch_size=3)
    words = {w: int(text_encoder.tokenize([w])[0][0, 1]) for w in ("red", "circle", "square", "green")}
    assert len(set(words.values())) == 4  # the hashed vocabulary keeps these words apart
    config = MaskedWordsConfig(mask_counts=[2, 3])  # Mask-2 hides both words of every caption
    results = MaskedWordsTask(config).run(model, ListData(id_images(3), [[c] for c in captions]), tmp_path)

    assert list(results)[:3] == ["matcher", "leak-free", "official"]  # the honest number first
    for protocol in ("leak-free", "official"):
        two = results[protocol]["mask-2"]
        assert two["captions"] == 3 and two["tokens"] == 6
        assert two["recall@1"] == 1.0
        # shuffled: caption 0 meets image 2 (green square: 0 of 2 right), caption 1 image 0 (red circle: "red"),
        # caption 2 image 1 (red square: "square") -> 2 of 6 tokens
        assert two["shuffled_recall@1"] == pytest.approx(2 / 6)
        three = results[protocol]["mask-3"]
        assert three["captions"] == 0 and three["recall@1"] is None


def test_the_shuffled_control_carries_the_previous_batchs_last_image(text_encoder, tmp_path):
    captions = ["red circle", "red square", "green square"]
    model, _ = code_reading_model(captions, text_encoder, batch_size=2)
    config = MaskedWordsConfig(mask_counts=[2], protocols=["official"])
    results = MaskedWordsTask(config).run(model, ListData(id_images(3), [[c] for c in captions]), tmp_path)
    # batch [0, 1]: caption 0 meets image 1, caption 1 image 0; batch [2]: caption 2 meets image 1
    # -> "red" + "red" + "square" = 3 of 6 tokens
    assert results["official"]["mask-2"]["shuffled_recall@1"] == pytest.approx(0.5)
    assert "leak-free" not in results


def test_model_matcher_without_a_masked_text_head_is_an_error(text_encoder, tmp_path):
    model = trained_model(IdentityTokenizer(), None, text_encoder)
    with pytest.raises(TaskError, match="masked-text"):
        MaskedWordsTask(MaskedWordsConfig(matcher="model")).run(model, ListData(id_images(2), [["a"], ["b"]]), tmp_path)


WIDTH, VOCAB, LENGTH = 8, 20, 6


def predicted_by(config: MaskedTextConfig, masked: torch.Tensor, vocabulary_ids=None):
    """A small head (its bias spread so that predictions depend on more than the decoder's sign),
    two padded captions and code rows: (head, rows, codes, padding mask, encoder, predictions)."""
    torch.manual_seed(0)
    head = MaskedTextLoss(config, WIDTH, VOCAB, LENGTH, vocabulary_ids=vocabulary_ids).eval()
    with torch.no_grad():
        head.head.bias.normal_(0, 3.0)
    pad = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 2, 0]]) != 0
    rows, codes = torch.randn(2, LENGTH, WIDTH), torch.randn(2, 4, WIDTH)
    encoder = SimpleNamespace(token_embedding=torch.randn(VOCAB, WIDTH))
    return head, rows, codes, pad, encoder, masked_predictions(head, codes, rows, masked, pad, encoder)


MASKED = torch.tensor([[False, True, False, False, False, False], [False, False, True, True, False, False]])


@pytest.mark.parametrize("attend_padding", [True, False])
def test_predictions_decode_padding_rows_as_the_head_was_trained(attend_padding):
    config = MaskedTextConfig(dropout=0.0, attend_padding=attend_padding)
    head, rows, codes, pad, encoder, predicted = predicted_by(config, MASKED)

    hidden = torch.where(MASKED.unsqueeze(-1), head.mask_embedding, rows) * pad.unsqueeze(-1)
    pair_mask = None if attend_padding else pad.unsqueeze(2) & pad.unsqueeze(1)
    decoded = head.decoder(hidden, codes, pair_mask)  # all 6 rows; masked keys when pair_mask is set
    expected = head.head(decoded[MASKED], encoder.token_embedding).argmax(-1)
    assert torch.equal(predicted, expected)


@pytest.mark.parametrize("attend_padding", [True, False])
def test_a_narrower_decoder_predicts_from_its_in_projected_rows(attend_padding):
    config = MaskedTextConfig(dropout=0.0, attend_padding=attend_padding, decoder_width=4, decoder_heads=2)
    head, rows, codes, pad, encoder, predicted = predicted_by(config, MASKED)

    hidden = torch.where(MASKED.unsqueeze(-1), head.mask_embedding, head.input_proj(rows)) * pad.unsqueeze(-1)
    pair_mask = None if attend_padding else pad.unsqueeze(2) & pad.unsqueeze(1)
    decoded = head.decoder(hidden, codes, pair_mask)  # b l d, cross-attending to the W-wide codes
    expected = head.head(decoded[MASKED], encoder.token_embedding).argmax(-1)
    assert decoded.shape == (2, LENGTH, 4) and torch.equal(predicted, expected)


def test_a_head_restricted_to_the_caption_vocabulary_predicts_token_ids():
    subset = torch.tensor([4, 7, 11, 12, 19])
    masked = torch.tensor([[False, True, True, False, False, False], [False, False, True, True, False, False]])
    config = MaskedTextConfig(dropout=0.0, vocabulary="captions")
    head, rows, codes, pad, encoder, predicted = predicted_by(config, masked, vocabulary_ids=subset)

    hidden = head.decode(torch.where(masked.unsqueeze(-1), head.mask_embedding, rows) * pad.unsqueeze(-1), codes, pad)
    full_logits = head.head.norm(F.gelu(head.head.fc(hidden[masked]))) @ encoder.token_embedding.T  # m v
    full_logits[:, subset] += head.head.bias  # every token's logit; only the subset's count
    assert set(predicted.tolist()) <= set(subset.tolist())
    assert torch.equal(predicted, subset[full_logits[:, subset].argmax(-1)])


@pytest.mark.slow
def test_a_run_with_the_small_scale_levers_keeps_its_caption_vocabulary_through_lgvq_eval(tmp_path, lgvq_cli):
    import copy
    import json

    from safetensors.torch import load_file

    from lgvq_core.run_file import load_run_file
    from lgvq_core.runner.loop import train
    from lgvq_core.testing.fixtures import TINY_RUN, write_run_file

    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name="levers", output_dir=str(tmp_path / "runs"))
    config["code_vit"] = {"layers": 1, "heads": 2, "width": 8}
    config["alignment"][1].update(text_input="masked-contextual", vocabulary="captions", decoder_layers=1)
    config["tasks"] = [{"type": "masked-words", "protocols": ["leak-free"], "shuffled_control": False}]
    run_dir = train(load_run_file(write_run_file(config, tmp_path / "levers.toml"))).run_dir
    trained = json.loads((run_dir / "eval" / "masked-words.json").read_text())["metrics"]

    for checkpoint in (run_dir / "checkpoints").glob("step-*/model.safetensors"):
        vocabulary = load_file(str(checkpoint))["alignment.losses.masked-text.head.vocabulary_ids"]
        assert 0 < len(vocabulary) < 256 and bool((vocabulary[1:] > vocabulary[:-1]).all())
    result = lgvq_cli("eval", str(run_dir), "--checkpoint", "best")
    assert result.code == 0, result.err
    again = json.loads((run_dir / "eval" / "masked-words.json").read_text())["metrics"]
    assert again == trained and 0 <= again["leak-free"]["mask-1"]["recall@1"] <= 1


@pytest.mark.slow
def test_a_run_with_a_narrower_decoder_predicts_masked_words_again_through_lgvq_eval(tmp_path, lgvq_cli):
    import copy
    import json

    from safetensors.torch import load_file

    from lgvq_core.run_file import load_run_file
    from lgvq_core.runner.loop import train
    from lgvq_core.testing.fixtures import TINY_RUN, write_run_file

    config = copy.deepcopy(TINY_RUN)
    config["run"].update(name="narrow", output_dir=str(tmp_path / "runs"))
    config["alignment"][1].update(
        text_input="token-embedding",
        decoder_width=8,
        decoder_heads=2,
        factored_cross_attention=True,
        vocabulary="captions",
    )
    config["tasks"] = [{"type": "masked-words", "protocols": ["leak-free", "official"], "shuffled_control": False}]
    run_dir = train(load_run_file(write_run_file(config, tmp_path / "narrow.toml"))).run_dir
    trained = json.loads((run_dir / "eval" / "masked-words.json").read_text())["metrics"]

    for checkpoint in (run_dir / "checkpoints").glob("step-*/model.safetensors"):
        state = load_file(str(checkpoint))
        assert state["alignment.losses.masked-text.input_proj.weight"].shape == (8, 32)  # text width W = 32
        assert state["alignment.losses.masked-text.mask_embedding"].shape == (16, 8)
    result = lgvq_cli("eval", str(run_dir), "--checkpoint", "best")
    assert result.code == 0, result.err
    again = json.loads((run_dir / "eval" / "masked-words.json").read_text())["metrics"]
    assert again == trained and again["matcher"] == "model"
    assert all(0 <= again[p]["mask-1"]["recall@1"] <= 1 for p in ("leak-free", "official"))
