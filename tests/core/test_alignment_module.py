"""The alignment module (shared code ViT + losses), gradient ownership, registry and configs."""

from __future__ import annotations

import os

import attrs
import pytest
import torch
from torch import nn

from lgvq_core.alignment.base import AlignmentLoss
from lgvq_core.alignment.loss_configs import MaskedTextConfig, MaskRatioConfig, RelationConfig, SemanticNCEConfig
from lgvq_core.alignment.module import AlignmentModule, build_alignment_module
from lgvq_core.cli import main as lgvq_main
from lgvq_core.config.describe import schema_rows, unstructure
from lgvq_core.config.fields import field_doc
from lgvq_core.context import BuildContext
from lgvq_core.errors import ConfigError, UnknownComponentError
from lgvq_core.registry import build
from lgvq_core.run_file import structure_component
from lgvq_core.testing.config import TinyTextConfig
from lgvq_core.testing.doubles import TinyText

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPTIONS = ["a red bird on a thin branch", "a man with a black hat", "two dogs play in the snow", "a small cat"]
NAMES = ("semantic-nce", "masked-text", "relation")


def tiny_encoder(causal: bool = False) -> TinyText:
    encoder = TinyText(TinyTextConfig(width=16, vocab_size=256, causal=causal, context_length=10))
    with torch.no_grad():
        if encoder.norm.weight.abs().sum() == 0:  # a zero LayerNorm gain would make every state 0
            encoder.norm.weight.fill_(1.0)
    return encoder


class StraightThroughLookup(nn.Module):
    """Nearest-code lookup with a straight-through estimator (used when no ``vq`` quantizer is installed)."""

    def __init__(self, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1 / codebook_size, 1 / codebook_size)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, z: torch.Tensor):
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        indices = torch.cdist(flat, self.codebook).argmin(1).view(z.shape[0], *z.shape[2:])
        z_q = self.embedding(indices).permute(0, 3, 1, 2)
        quant = z + (z_q - z).detach()
        loss = (z_q.detach() - z).square().mean() + 0.25 * (z_q - z.detach()).square().mean()
        return quant, indices, loss


def make_quantizer(codebook_size: int, dim: int) -> nn.Module:
    try:
        return build("quantizer", {"type": "vq", "codebook_size": codebook_size, "dim": dim})
    except (UnknownComponentError, ConfigError):
        return StraightThroughLookup(codebook_size, dim)


def quantize(quantizer: nn.Module, z: torch.Tensor):
    out = quantizer(z)
    if isinstance(out, tuple):
        return out
    return out.quant, out.indices, out.loss


def make_alignment(encoder, names=NAMES, options=None, code_dim=8, grid=(2, 2), vit_width=None) -> AlignmentModule:
    context = BuildContext(
        text_encoder=encoder, code_dim=code_dim, latent_size=grid, train_captions=lambda: iter(CAPTIONS)
    )
    options = options or {}
    losses = [
        (name, build("alignment_loss", {"type": name, **options.get(name, {})}, context=context), 0.1) for name in names
    ]
    return build_alignment_module(
        losses, code_vit_layers=2, code_vit_heads=1, context=context, code_vit_width=vit_width
    )


def _step(alignment, encoder, quantizer, image_encoder, captions=CAPTIONS):
    torch.manual_seed(1)
    z = image_encoder(torch.randn(len(captions), 3, 4, 4))  # b d 2 2
    quant, indices, _ = quantize(quantizer, z)
    text = encoder.encode(captions)
    terms = alignment(quant, text, quantizer.codebook, indices, encoder)
    alignment.weighted_sum(terms).backward()
    return terms


def test_official_losses_train_the_encoder_and_alignment_heads_but_never_the_codebook_or_text_encoder():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    alignment = make_alignment(encoder)
    quantizer = make_quantizer(16, 8)
    image_encoder = nn.Conv2d(3, 8, 2, stride=2)
    terms = _step(alignment, encoder, quantizer, image_encoder)
    assert set(terms) == set(NAMES) and all(torch.isfinite(t) for t in terms.values())
    assert image_encoder.weight.grad is not None and image_encoder.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in quantizer.parameters())
    assert all(p.grad is None for p in encoder.parameters())
    for name, parameter in alignment.named_parameters():
        assert parameter.grad is not None, f"{name} is not in the graph (DDP would fail)"


def test_the_small_scale_levers_still_train_the_encoder_and_every_alignment_parameter():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    levers = {
        "text_input": "masked-contextual",
        "vocabulary": "captions",
        "decoder_layers": 1,
        "factored_cross_attention": True,
        "decoder_width": 8,
    }
    alignment = make_alignment(encoder, options={"masked-text": levers}, vit_width=4)
    assert alignment.code_vit.width == 4 and alignment.code_vit.proj.shape == (4, 16)
    image_encoder = nn.Conv2d(3, 8, 2, stride=2)
    terms = _step(alignment, encoder, make_quantizer(16, 8), image_encoder)
    assert all(torch.isfinite(t) for t in terms.values())
    assert image_encoder.weight.grad is not None and image_encoder.weight.grad.abs().sum() > 0
    for name, parameter in alignment.named_parameters():
        assert parameter.grad is not None, f"{name} is not in the graph (DDP would fail)"


class _Recording(AlignmentLoss):
    def forward(self, inputs):
        self.seen = inputs
        return inputs.vit_tokens.sum() * 0


def test_the_losses_get_the_code_vits_output_and_its_two_factors():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    context = BuildContext(text_encoder=encoder, code_dim=8, latent_size=(2, 2))
    recording = _Recording()
    alignment = build_alignment_module([("recording", recording, 1.0)], 1, 1, context, code_vit_width=6)
    quant = torch.randn(4, 8, 2, 2)
    alignment(quant, encoder.encode(CAPTIONS), torch.zeros(16, 8), None, encoder)
    seen = recording.seen
    assert torch.equal(seen.vit_tokens, alignment.code_vit(quant))
    assert seen.vit_features.shape == (4, 5, 6) and seen.vit_proj is alignment.code_vit.proj
    assert torch.equal(seen.vit_features @ seen.vit_proj, seen.vit_tokens)


def test_relation_with_codebook_source_trains_the_codebook():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    alignment = make_alignment(encoder, names=("relation",), options={"relation": {"code_source": "codebook"}})
    quantizer = make_quantizer(16, 8)
    _step(alignment, encoder, quantizer, nn.Conv2d(3, 8, 2, stride=2))
    assert quantizer.codebook.grad is not None and quantizer.codebook.grad.abs().sum() > 0


def test_a_batch_without_masked_tokens_gives_zero_masked_text_loss_and_zero_grads():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    ratio = {"mean": 0.0, "std": 0.1, "min": 0.0, "max": 0.0}
    alignment = make_alignment(encoder, names=("masked-text",), options={"masked-text": {"mask_ratio": ratio}})
    image_encoder = nn.Conv2d(3, 8, 2, stride=2)
    terms = _step(alignment, encoder, make_quantizer(16, 8), image_encoder)
    assert terms["masked-text"].item() == 0.0
    for name, parameter in alignment.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() == 0, name
    assert image_encoder.weight.grad is not None and image_encoder.weight.grad.abs().sum() == 0


def test_weighted_sum_uses_each_losss_weight():
    alignment = make_alignment(tiny_encoder())
    alignment.weights = {"semantic-nce": 0.001, "masked-text": 0.01, "relation": 0.0001}
    terms = {"semantic-nce": torch.tensor(2.0), "masked-text": torch.tensor(3.0), "relation": torch.tensor(5.0)}
    assert alignment.weighted_sum(terms).item() == pytest.approx(0.002 + 0.03 + 0.0005)


def test_one_code_vit_is_shared_and_built_from_the_context():
    encoder = tiny_encoder()
    alignment = make_alignment(encoder, code_dim=8, grid=(2, 3))
    vits = [m for m in alignment.modules() if type(m).__name__ == "CodeViT"]
    assert len(vits) == 1 and vits[0].positional_embedding.shape == (7, 8) and vits[0].proj.shape == (8, 16)
    assert alignment.image_embedding(torch.randn(2, 8, 2, 3)).shape == (2, 16)


class _TextOnly(AlignmentLoss):
    uses_code_vit = False

    def forward(self, inputs):
        assert inputs.vit_tokens is None
        return inputs.text.token_states.sum() * 0


def test_no_code_vit_is_built_when_no_loss_uses_it():
    alignment = build_alignment_module([("text-only", _TextOnly(), 1.0)], 2, 1, BuildContext())
    assert alignment.code_vit is None and list(alignment.parameters()) == []
    encoder = tiny_encoder()
    terms = alignment(torch.zeros(2, 8, 2, 2), encoder.encode(CAPTIONS[:2]), torch.zeros(4, 8), None, encoder)
    assert terms["text-only"].item() == 0.0


def test_the_code_vit_needs_the_grid_and_code_dim():
    context = BuildContext(text_encoder=tiny_encoder(), code_dim=8)
    loss = build("alignment_loss", {"type": "semantic-nce"}, context=context)
    with pytest.raises(ValueError, match="latent_size=None"):
        build_alignment_module([("semantic-nce", loss, 0.1)], 2, 1, context)


def test_leak_warnings_come_from_the_official_masked_text_input():
    encoder = tiny_encoder(causal=True)
    (warning,) = make_alignment(encoder).leak_warnings(encoder)
    assert warning.startswith("masked-text:") and "unmasked-contextual" in warning
    honest = make_alignment(encoder, options={"masked-text": {"text_input": "masked-contextual"}})
    assert honest.leak_warnings(encoder) == []


def test_masked_contextual_runs_one_frozen_text_pass_per_step():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    alignment = make_alignment(
        encoder, names=("masked-text",), options={"masked-text": {"text_input": "masked-contextual"}}
    )
    calls = []
    original = encoder.encode_ids
    encoder.encode_ids = lambda ids, pad: calls.append(ids) or original(ids, pad)
    text = encoder.encode(CAPTIONS)
    calls.clear()
    z = torch.randn(4, 8, 2, 2, requires_grad=True)
    alignment(z, text, torch.zeros(4, 8), torch.zeros(4, 2, 2, dtype=torch.long), encoder)["masked-text"].backward()
    assert len(calls) == 1 and z.grad is not None


# ------------------------------------------------------------------------------------------
# registry and configs
# ------------------------------------------------------------------------------------------
def test_the_three_losses_are_listed(capsys):
    assert lgvq_main(["list", "alignment-loss"]) == 0
    listed = capsys.readouterr().out
    for name in NAMES:
        assert name in listed


def test_schema_shows_every_option(capsys):
    for name in NAMES:
        assert lgvq_main(["schema", "alignment-loss", name]) == 0
    shown = capsys.readouterr().out
    for option in ("denominator_eps", "duplicate_captions", "text_input", "mask_ratio", "min_masked", "pairs"):
        assert option in shown
    assert "LEAKS" in shown


@pytest.mark.parametrize(
    "table",
    [
        {
            "type": "semantic-nce",
            "weight": 0.001,
            "direction": "symmetric",
            "learn_temperature": True,
            "temperature": 0.07,
            "negatives": "gathered",
            "duplicate_captions": "mask",
            "denominator_eps": 0.0,
        },
        {
            "type": "masked-text",
            "weight": 0.01,
            "text_input": "masked-contextual",
            "decoder": "two-stage",
            "mask_ratio": {"mean": 0.55, "std": 0.25, "min": 0.5, "max": 1.0},
            "mask_ratio_per": "sample",
            "mask_unit": "word",
            "min_masked": 1,
            "label_smoothing": 0.0,
            "vocabulary": "captions",
            "factored_cross_attention": True,
        },
        {
            "type": "relation",
            "weight": 0.0001,
            "word_features": "token-embedding",
            "code_source": "codebook",
            "code_projection": "none",
            "scale_by_match": False,
            "pairs": "words-offdiag",
            "reduction": "mean-valid",
        },
    ],
    ids=lambda t: t["type"],
)
def test_configs_round_trip(table):
    component = structure_component("alignment_loss", table)
    again = structure_component("alignment_loss", unstructure(component))
    assert again == component
    assert {k: v for k, v in unstructure(component).items() if k in table} == table


def test_defaults_are_the_official_values():
    assert unstructure(SemanticNCEConfig()) == {
        "weight": 0.1,
        "temperature": 1.0,
        "learn_temperature": False,
        "direction": "image-to-text",
        "denominator_eps": 1e-6,
        "negatives": "local",
        "duplicate_captions": "ignore",
    }
    masked = MaskedTextConfig()
    assert (masked.text_input, masked.decoder, masked.mask_ratio_per, masked.mask_unit) == (
        "unmasked-contextual",
        "fused",
        "batch",
        "token",
    )
    assert (masked.mask_ratio, masked.min_masked, masked.label_smoothing) == (
        MaskRatioConfig(0.5, 0.1, 0.1, 0.3),
        0,
        0.1,
    )
    assert (masked.decoder_layers, masked.decoder_heads, masked.dropout) == (2, 1, 0.1)
    assert (masked.vocabulary, masked.factored_cross_attention) == ("full", False)
    relation = RelationConfig()
    assert (
        relation.word_features,
        relation.code_source,
        relation.code_projection,
        relation.scale_by_match,
        relation.pairs,
        relation.reduction,
    ) == ("contextual", "straight-through", "linear-gelu-ln", True, "all-non-pad", "mean-all")


def test_bad_options_are_reported_with_their_path():
    with pytest.raises(ConfigError) as info:
        structure_component(
            "alignment_loss",
            {"type": "masked-text", "text_input": "masked", "mask_ratio": {"min": 0.5, "max": 0.2, "mena": 1.0}},
            "$.alignment[1]",
        )
    text = str(info.value)
    assert '$.alignment[1].text_input: must be one of "unmasked-contextual"' in text
    assert "$.alignment[1].mask_ratio.mena: unknown key 'mena'; did you mean 'mean'?" in text


def test_a_vocabulary_outside_its_choices_is_reported_with_its_path():
    with pytest.raises(ConfigError) as info:
        structure_component("alignment_loss", {"type": "masked-text", "vocabulary": "caption"}, "$.alignment[1]")
    assert str(info.value).endswith(
        '$.alignment[1].vocabulary: must be one of "full", "captions", got \'caption\'; did you mean "captions"?'
    )


def test_mask_ratio_bounds_are_checked():
    with pytest.raises(ConfigError, match=r"mask_ratio.max: must be >= min \(0.5\)"):
        structure_component("alignment_loss", {"type": "masked-text", "mask_ratio": {"min": 0.5, "max": 0.2}})


def test_every_option_is_documented():
    for cls in (SemanticNCEConfig, MaskedTextConfig, MaskRatioConfig, RelationConfig):
        fields = attrs.fields(cls)
        assert fields and all(field_doc(f) for f in fields), cls.__name__
    assert "LEAKS" in field_doc(attrs.fields(MaskedTextConfig).text_input)
    assert {row["name"] for row in schema_rows(RelationConfig)} >= {"weight", "pairs", "reduction"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_alignment_on_cuda_matches_cpu_and_runs_under_bf16_autocast():
    torch.manual_seed(0)
    encoder = tiny_encoder()
    every_word = {"mask_ratio": {"mean": 1.0, "std": 0.1, "min": 1.0, "max": 1.0}, "dropout": 0.0}
    alignment = make_alignment(encoder, options={"masked-text": every_word})
    quant = torch.randn(4, 8, 2, 2)
    codebook, indices = torch.randn(16, 8), torch.randint(0, 16, (4, 2, 2))
    text = encoder.encode(CAPTIONS)
    expected = alignment(quant, text, codebook, indices, encoder)

    alignment, encoder = alignment.cuda(), encoder.cuda()
    quant_cuda = quant.cuda().requires_grad_(True)
    args = (text.to("cuda"), codebook.cuda(), indices.cuda(), encoder)
    terms = alignment(quant_cuda, *args)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), name
    alignment.weighted_sum(terms).backward()
    assert quant_cuda.grad.abs().sum() > 0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        terms = alignment(quant_cuda, *args)
    assert all(torch.isfinite(v) for v in terms.values())
    alignment.weighted_sum(terms).backward()
