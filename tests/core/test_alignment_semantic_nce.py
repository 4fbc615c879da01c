"""semantic-nce (docs/method.md: Global semantic alignment): the official InfoNCE and its options."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lgvq_core.alignment.base import AlignmentInputs
from lgvq_core.alignment.loss_configs import SemanticNCEConfig
from lgvq_core.alignment.semantic_nce import MAX_LOGIT_SCALE, SemanticNCELoss, gather_rows
from lgvq_core.text_encoder import TextFeatures

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _inputs(image: torch.Tensor, sentence: torch.Tensor, ids: torch.Tensor | None = None) -> AlignmentInputs:
    batch = image.shape[0]
    if ids is None:
        ids = torch.arange(batch).unsqueeze(1) + 10  # every caption different
    text = TextFeatures(
        ids=ids,
        pad_mask=torch.ones_like(ids, dtype=torch.bool),
        word_mask=torch.ones_like(ids, dtype=torch.bool),
        token_states=torch.zeros(batch, ids.shape[1], sentence.shape[1]),
        sentence=sentence,
    )
    tokens = torch.cat([image.unsqueeze(1), torch.zeros(batch, 3, image.shape[1])], dim=1)
    return AlignmentInputs(
        quant=torch.zeros(batch, 1, 1, 1),
        text=text,
        vit_tokens=tokens,
        codebook=torch.zeros(1, 1),
        indices=torch.zeros(batch, 1, 1, dtype=torch.long),
        text_encoder=None,
    )


# Two images, hand-chosen: v1 = (3, 4)/5, v2 = (1, 0); t1 = (1, 0), t2 = (0, 2)/2.
IMAGE = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
SENTENCE = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
# cosines: v1.t1 = 0.6, v1.t2 = 0.8, v2.t1 = 1, v2.t2 = 0


def test_official_loss_matches_the_hand_computed_formula_with_the_denominator_eps():
    loss = SemanticNCELoss(SemanticNCEConfig())(_inputs(IMAGE, SENTENCE))
    row1 = -math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8) + 1e-6))
    row2 = -math.log(math.exp(0.0) / (math.exp(1.0) + math.exp(0.0) + 1e-6))
    assert loss.item() == pytest.approx((row1 + row2) / 2, rel=1e-6)


def test_the_eps_changes_the_loss_and_zero_eps_is_cross_entropy():
    inputs = _inputs(IMAGE, SENTENCE)
    big_eps = SemanticNCELoss(SemanticNCEConfig(denominator_eps=1.0))(inputs)
    row1 = -math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8) + 1.0))
    row2 = -math.log(1.0 / (math.exp(1.0) + 1.0 + 1.0))
    assert big_eps.item() == pytest.approx((row1 + row2) / 2, rel=1e-6)
    no_eps = SemanticNCELoss(SemanticNCEConfig(denominator_eps=0.0))(inputs)
    logits = F.normalize(IMAGE, dim=-1) @ F.normalize(SENTENCE, dim=-1).T
    assert no_eps.item() == pytest.approx(F.cross_entropy(logits, torch.arange(2)).item(), rel=1e-6)


def test_temperature_divides_the_cosines():
    loss = SemanticNCELoss(SemanticNCEConfig(temperature=0.5, denominator_eps=0.0))(_inputs(IMAGE, SENTENCE))
    row1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))
    row2 = -math.log(1.0 / (math.exp(2.0) + 1.0))
    assert loss.item() == pytest.approx((row1 + row2) / 2, rel=1e-6)


def test_symmetric_direction_averages_image_to_text_and_text_to_image():
    loss = SemanticNCELoss(SemanticNCEConfig(direction="symmetric", denominator_eps=0.0))(_inputs(IMAGE, SENTENCE))
    i2t = (-math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8))) - math.log(1 / (math.exp(1) + 1))) / 2
    # text -> image: t1 against (v1, v2) = (0.6, 1); t2 against (v1, v2) = (0.8, 0)
    t2i = (-math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(1.0))) - math.log(1 / (math.exp(0.8) + 1))) / 2
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_learned_temperature_is_a_clip_logit_scale_clamped_at_100_and_trained():
    module = SemanticNCELoss(SemanticNCEConfig(temperature=0.07, learn_temperature=True))
    assert module.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    image = IMAGE.clone().requires_grad_(True)
    module(_inputs(image, SENTENCE)).backward()
    assert module.logit_scale.grad is not None and module.logit_scale.grad.abs() > 0
    with torch.no_grad():
        module.logit_scale.fill_(math.log(1000.0))
    assert module.scale().item() == pytest.approx(MAX_LOGIT_SCALE)
    assert list(SemanticNCELoss(SemanticNCEConfig()).parameters()) == []


def test_duplicate_captions_mask_drops_identical_captions_from_the_denominator():
    # Three images; captions 0 and 2 are the same token ids.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sentence = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ids = torch.tensor([[5, 6], [7, 8], [5, 6]])
    masked = SemanticNCELoss(SemanticNCEConfig(duplicate_captions="mask", denominator_eps=0.0))
    ignored = SemanticNCELoss(SemanticNCEConfig(denominator_eps=0.0))
    c = 1 / math.sqrt(2)
    # cosines: row0 (1, 0, 1), row1 (0, 1, 0), row2 (c, c, c)
    expected_masked = (
        -math.log(math.e / (math.e + 1))  # row 0: column 2 (same caption) left out
        - math.log(math.e / (1 + math.e + 1))  # row 1: no duplicate
        - math.log(math.exp(c) / (math.exp(c) + math.exp(c)))  # row 2: column 0 left out
    ) / 3
    expected_ignored = (
        -math.log(math.e / (math.e + 1 + math.e))
        - math.log(math.e / (1 + math.e + 1))
        - math.log(math.exp(c) / (3 * math.exp(c)))
    ) / 3
    inputs = _inputs(image, sentence, ids)
    assert masked(inputs).item() == pytest.approx(expected_masked, rel=1e-6)
    assert ignored(inputs).item() == pytest.approx(expected_ignored, rel=1e-6)


def test_gradient_reaches_the_image_side_only():
    image = IMAGE.clone().requires_grad_(True)
    sentence = SENTENCE.clone().requires_grad_(True)
    SemanticNCELoss(SemanticNCEConfig())(_inputs(image, sentence)).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert sentence.grad is None


def test_the_global_embedding_is_used_when_given():
    inputs = _inputs(torch.zeros(2, 2), SENTENCE)  # the global token itself is useless here
    inputs.vit_global = IMAGE
    expected = SemanticNCELoss(SemanticNCEConfig())(_inputs(IMAGE, SENTENCE))
    assert SemanticNCELoss(SemanticNCEConfig())(inputs).item() == pytest.approx(expected.item())


def test_gathered_negatives_without_a_process_group_are_the_local_batch():
    x = torch.randn(3, 4)
    gathered, offset = gather_rows(x)
    assert gathered is x and offset == 0
    local = SemanticNCELoss(SemanticNCEConfig())(_inputs(IMAGE, SENTENCE))
    gathered_loss = SemanticNCELoss(SemanticNCEConfig(negatives="gathered"))(_inputs(IMAGE, SENTENCE))
    assert gathered_loss.item() == pytest.approx(local.item())


def _gathered_worker(rank: int, store: str, image: torch.Tensor, sentence: torch.Tensor, out: dict) -> None:
    import traceback

    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only: no dependence on the host's network
    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
        rows = slice(0, 2) if rank == 0 else slice(2, 5)  # uneven shards: 2 and 3 rows
        local_image = image[rows].clone().requires_grad_(True)
        loss = SemanticNCELoss(SemanticNCEConfig(negatives="gathered"))(_inputs(local_image, sentence[rows]))
        loss.backward()
        out[rank] = (loss.item(), local_image.grad.clone())
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - reported by the test
        out[rank] = traceback.format_exc()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_gathered_negatives_across_two_processes_use_every_caption(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    image, sentence = torch.randn(5, 4), torch.randn(5, 4)
    out = mp.Manager().dict()
    mp.start_processes(
        _gathered_worker,
        args=(str(tmp_path / "store"), image, sentence, out),
        nprocs=2,
        join=True,
        # fork is fast, but unsafe once autograd has started its device threads (machines with a GPU)
        start_method="spawn" if torch.cuda.is_available() else "fork",
    )
    for rank in (0, 1):
        assert not isinstance(out[rank], str), out[rank]
    # Reference: each rank's rows against all 5 captions, with the official formula.
    logits = F.normalize(image, dim=-1) @ F.normalize(sentence, dim=-1).T
    per_row = torch.logaddexp(torch.logsumexp(logits, 1), torch.tensor(math.log(1e-6))) - logits.diag()
    assert out[0][0] == pytest.approx(per_row[:2].mean().item(), rel=1e-5)
    assert out[1][0] == pytest.approx(per_row[2:].mean().item(), rel=1e-5)
    local_image = image[:2].clone().requires_grad_(True)
    reference = F.normalize(local_image, dim=-1) @ F.normalize(sentence, dim=-1).T
    rows = torch.logaddexp(torch.logsumexp(reference, 1), torch.tensor(math.log(1e-6))) - reference[:, :2].diag()
    rows.mean().backward()
    torch.testing.assert_close(out[0][1], local_image.grad)


def test_config_needs_two_images_per_batch():
    run = SimpleNamespace(train=SimpleNamespace(batch_size=1))
    problems = list(SemanticNCEConfig().cross_check(run, "$.alignment[0]"))
    assert len(problems) == 1 and not problems[0].warning
    assert "batch_size >= 2" in problems[0].message and problems[0].path == "$.train.batch_size"
    gathered = list(SemanticNCEConfig(negatives="gathered").cross_check(run, "$.alignment[0]"))
    assert len(gathered) == 1 and gathered[0].warning
    run.train.batch_size = 2
    assert list(SemanticNCEConfig().cross_check(run, "$.alignment[0]")) == []
