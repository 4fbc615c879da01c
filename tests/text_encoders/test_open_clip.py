"""The open_clip text encoder: checkpoints a user gives, the tower run in parts at L, offline errors.

Every model here is a tiny CLIP (2 layers, width 32, the real 49408-token BPE vocabulary) whose
random weights the tests save as .pt and .safetensors and load back through ``pretrained = <path>``,
the route a user's checkpoint takes.
"""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from lgvq_core.errors import CheckpointError, ConfigError
from lgvq_core.registry import build
from lgvq_core.run_file import structure_component
from lgvq_text_encoders.config import OpenClipConfig
from lgvq_text_encoders.open_clip_text import OpenClipTextEncoder
from lgvq_text_encoders.open_clip_weights import resolve

SOT, EOT = 49406, 49407
CAPTIONS = ["a photo of a dog!", "a bird with a red head and black wings", "a hairstyling xylophonist"]
LONG_CAPTION = " ".join(["a small brown dog runs across a green field"] * 6)  # > 30 tokens

TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model config and two random checkpoints of it, each as .pt and .safetensors."""
    folder = tmp_path_factory.mktemp("open_clip")
    config_file = folder / "lgvq-test-tiny-clip.json"
    config_file.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config_file)
    paths = {"config": config_file}
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = open_clip.create_model("lgvq-test-tiny-clip", pretrained=None)
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        torch.save(state, folder / f"clip-{seed}.pt")
        save_file(state, str(folder / f"clip-{seed}.safetensors"))
        paths[f"pt{seed}"] = folder / f"clip-{seed}.pt"
        paths[f"safetensors{seed}"] = folder / f"clip-{seed}.safetensors"
    return paths


def make(files, checkpoint="pt1", **options) -> OpenClipTextEncoder:
    table = {"type": "open_clip", "model": str(files["config"]), "pretrained": str(files[checkpoint]), **options}
    return build("text_encoder", table, "$.text_encoder")


@pytest.fixture(scope="module")
def encoder(files) -> OpenClipTextEncoder:
    return make(files)


@pytest.fixture(scope="module")
def reference(files) -> torch.nn.Module:
    """The whole open_clip model with the same weights, as open_clip itself loads it."""
    return open_clip.create_model("lgvq-test-tiny-clip", pretrained=str(files["pt1"])).eval()


def test_pt_and_safetensors_checkpoints_give_identical_features_and_identity(files, encoder):
    from_safetensors = make(files, "safetensors1")
    a, b = encoder.encode(CAPTIONS), from_safetensors.encode(CAPTIONS)
    assert torch.equal(a.token_states, b.token_states)
    assert torch.equal(a.sentence, b.sentence)
    assert encoder.identity == from_safetensors.identity


def test_loaded_weights_are_the_checkpoint_weights(files, encoder):
    state = torch.load(files["pt1"], weights_only=True)
    assert torch.equal(encoder.token_embedding, state["token_embedding.weight"])
    assert torch.equal(encoder.text_projection, state["text_projection"])


def test_only_the_text_tower_is_kept(encoder, reference):
    names = [name for name, _ in encoder.named_parameters()]
    assert not any("visual" in name or "logit_scale" in name for name in names)
    text_parameters = sum(
        p.numel() for name, p in reference.named_parameters() if not name.startswith(("visual.", "logit_"))
    )
    assert sum(p.numel() for p in encoder.parameters()) == text_parameters
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.training


def test_attributes_follow_the_clip_tokenizer_and_model(encoder):
    assert (encoder.width, encoder.embed_dim, encoder.vocab_size, encoder.context_length) == (32, 24, 49408, 30)
    assert (encoder.bos_id, encoder.eos_id, encoder.pad_id) == (SOT, EOT, 0)
    assert encoder.mask_placeholder_id == 265  # "*"
    assert encoder.causal
    assert tuple(encoder.token_embedding.shape) == (49408, 32)


def test_ids_and_masks_mark_specials_words_and_padding(encoder):
    features = encoder.encode(["a photo of a dog!"])
    ids = features.ids[0]
    # <sot> a photo of a dog ! <eot> pad...; "!" has id 0, like padding, and is still a real token.
    assert ids[:8].tolist() == [SOT, 320, 1125, 539, 320, 1929, 256, EOT]
    assert ids[8:].eq(0).all()
    assert features.pad_mask[0].tolist() == [True] * 8 + [False] * 22
    assert features.word_mask[0].tolist() == [False] + [True] * 6 + [False] * 23
    assert encoder.decode_tokens(ids)[:9] == [
        "<start_of_text>",
        "a",
        "photo",
        "of",
        "a",
        "dog",
        "!",
        "<end_of_text>",
        "<pad>",
    ]


def test_sentence_is_the_end_of_text_state_times_the_projection(encoder):
    features = encoder.encode(CAPTIONS)
    eot = features.ids.eq(EOT).float().argmax(dim=1)
    states = features.token_states[torch.arange(len(CAPTIONS)), eot]
    torch.testing.assert_close(features.sentence, states @ encoder.text_projection)


def test_token_states_equal_open_clip_encode_text_for_short_captions(encoder, reference):
    # A causal tower gives a token the same state whatever follows it, so at L = 30 the
    # end-of-text state must equal open_clip's own pass over all 77 positions.
    tokens = open_clip.get_tokenizer("lgvq-test-tiny-clip")(CAPTIONS)  # b 77
    with torch.no_grad():
        expected = reference.encode_text(tokens)
    torch.testing.assert_close(encoder.encode(CAPTIONS).sentence, expected, rtol=1e-5, atol=1e-6)


def test_states_at_l_equal_the_first_l_states_of_a_longer_context(files, encoder):
    longer = make(files, context_length=77)
    short, full = encoder.encode(CAPTIONS), longer.encode(CAPTIONS)
    torch.testing.assert_close(short.token_states, full.token_states[:, :30], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(short.sentence, full.sentence, rtol=1e-5, atol=1e-6)


def test_position_rows_beyond_l_are_never_used(files, encoder, tmp_path):
    state = torch.load(files["pt1"], weights_only=True)
    state["positional_embedding"][30:] = 1e3
    changed = tmp_path / "changed-positions.pt"
    torch.save(state, changed)
    other = build("text_encoder", {"type": "open_clip", "model": str(files["config"]), "pretrained": str(changed)}, "$")
    torch.testing.assert_close(other.encode(CAPTIONS).token_states, encoder.encode(CAPTIONS).token_states)


def test_attention_is_causal_and_cut_to_l(encoder):
    assert tuple(encoder.attn_mask.shape) == (30, 30)
    first, second = encoder.encode(["a photo of a dog", "a photo of a cat"]).token_states
    # "dog"/"cat" sit at position 5: every earlier state is untouched, that one and later differ.
    torch.testing.assert_close(first[:5], second[:5])
    assert not torch.allclose(first[5], second[5])


def test_a_causal_tower_hides_padding_so_a_masked_reencoding_may_stop_at_end_of_text(encoder):
    from lgvq_core.alignment.masked_text import encode_masked

    text = encoder.encode(CAPTIONS)
    masked = torch.zeros_like(text.word_mask)
    masked[:, 2] = True
    placeholder = torch.where(masked, torch.full_like(text.ids, encoder.mask_placeholder_id), text.ids)
    full, _ = encoder.encode_ids(placeholder, text.pad_mask)
    trimmed = encode_masked(encoder, text, masked)
    pad = text.pad_mask
    assert encoder.causal and encoder.padding_invisible and int(pad.sum(1).max()) < 30
    torch.testing.assert_close(trimmed[pad], full[pad])


def test_truncation_writes_end_of_text_into_the_last_slot(encoder):
    features = encoder.encode([LONG_CAPTION])
    assert features.ids[0, 0] == SOT and features.ids[0, -1] == EOT
    assert features.pad_mask.all()
    assert features.word_mask[0].tolist() == [False] + [True] * 28 + [False]
    torch.testing.assert_close(features.sentence[0], features.token_states[0, -1] @ encoder.text_projection)


def test_embed_ids_are_rows_of_the_token_embedding(encoder):
    ids = encoder.encode(CAPTIONS[:1]).ids
    assert torch.equal(encoder.embed_ids(ids), encoder.token_embedding[ids])


def test_encode_ids_with_placeholders_matches_encoding_the_masked_caption(encoder):
    features = encoder.encode(["a photo of a dog"])
    masked = features.ids.clone()
    masked[0, 5] = encoder.mask_placeholder_id
    states, _ = encoder.encode_ids(masked, features.pad_mask)
    torch.testing.assert_close(states, encoder.encode(["a photo of a *"]).token_states)


def test_word_ids_group_bpe_pieces_of_one_word(encoder):
    ids = encoder.encode(["a hairstyling xylophonist"]).ids
    # <sot> a hair styling xy lo ph onist <eot>
    assert encoder.word_ids(ids)[0, :9].tolist() == [-1, 1, 2, 2, 4, 4, 4, 4, -1]
    assert encoder.word_ids(ids)[0, 9:].eq(-1).all()


def test_identity_follows_checkpoint_content_not_its_path(files, encoder):
    other_weights = make(files, "pt2")
    assert other_weights.identity != encoder.identity
    assert make(files, context_length=20).identity != encoder.identity
    assert "L=30" in encoder.identity


def test_random_weights_are_seeded(files):
    table = {"type": "open_clip", "model": str(files["config"]), "pretrained": "none"}
    first, again = build("text_encoder", table, "$"), build("text_encoder", table, "$")
    assert first.identity == again.identity
    assert build("text_encoder", {**table, "seed": 1}, "$").identity != first.identity


def test_pretrained_tag_not_in_cache_fails_at_once_with_local_file_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"downloads are off \(HF_HUB_OFFLINE=1\)") as raised:
        OpenClipTextEncoder(OpenClipConfig(model="ViT-B-32", pretrained="openai"))
    assert 'pretrained = "/path/to/open_clip_model.safetensors"' in str(raised.value)


def test_downloads_can_be_switched_off_in_the_config(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CheckpointError, match=r"downloads are off \(allow_download = false\)"):
        OpenClipTextEncoder(OpenClipConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k", allow_download=False))


@pytest.mark.parametrize(
    ("tag", "repo", "quick_gelu"),
    [
        ("laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", False),
        ("openai", "timm/vit_base_patch32_clip_224.openai", True),
    ],
)
def test_tag_weights_in_the_hub_cache_are_used_without_network(tmp_path, monkeypatch, tag, repo, quick_gelu):
    from huggingface_hub import constants

    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    resolved = resolve(OpenClipConfig(model="ViT-B-32", pretrained=tag, allow_download=False))
    assert resolved.checkpoint == str(snapshot / "open_clip_model.safetensors")
    assert resolved.quick_gelu is quick_gelu  # OpenAI's weights were trained with QuickGELU


def test_hub_model_not_in_cache_fails_with_local_file_hint():
    config = OpenClipConfig(pretrained="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    with pytest.raises(CheckpointError, match="local file"):
        OpenClipTextEncoder(config)


def test_missing_checkpoint_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(CheckpointError, match="nowhere.safetensors"):
        OpenClipTextEncoder(OpenClipConfig(model="ViT-B-32", pretrained=str(missing)))


def test_unknown_tag_lists_the_model_tags():
    with pytest.raises(ConfigError, match="laion2b_s34b_b79k"):
        OpenClipTextEncoder(OpenClipConfig(model="ViT-B-32", pretrained="laion-typo"))


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean 'ViT-B-32'"):
        OpenClipTextEncoder(OpenClipConfig(model="ViT-B-3", pretrained="none"))


def test_text_tower_from_hugging_face_is_rejected_clearly():
    with pytest.raises(ConfigError, match="not supported: its text tower is the Hugging Face model"):
        OpenClipTextEncoder(OpenClipConfig(model="roberta-ViT-B-32", pretrained="none"))


def test_checkpoint_of_another_architecture_is_a_checkpoint_error(files):
    with pytest.raises(CheckpointError, match="could not load open_clip model 'ViT-S-32-alt'"):
        OpenClipTextEncoder(OpenClipConfig(model="ViT-S-32-alt", pretrained=str(files["pt1"])))


def test_context_length_beyond_the_model_positions_is_rejected(files):
    with pytest.raises(ConfigError, match=r"context_length: 78 is outside \[2, 77\]"):
        make(files, context_length=78)


def test_lgvq_check_reports_context_length_beyond_the_positions():
    config = structure_component("text_encoder", {"type": "open_clip", "context_length": 100}).config
    problems = list(config.cross_check(None, "$.text_encoder"))
    assert [p.path for p in problems] == ["$.text_encoder.context_length"]
    assert "77 positions" in problems[0].message
    assert list(OpenClipConfig().cross_check(None, "$.text_encoder")) == []


def test_lgvq_check_reports_an_unknown_model_and_a_missing_checkpoint(tmp_path):
    table = {"type": "open_clip", "model": "ViT-B-3", "pretrained": str(tmp_path / "missing.pt")}
    config = structure_component("text_encoder", table).config
    problems = {p.path: p.message for p in config.cross_check(None, "$.text_encoder")}
    assert "did you mean 'ViT-B-32'" in problems["$.text_encoder.model"]
    assert "missing.pt" in problems["$.text_encoder.pretrained"]
