"""Image-to-text retrieval: recall counts a hit when any of the image's own captions ranks high enough."""

from __future__ import annotations

import pytest
import torch
from task_doubles import IdentityTokenizer, ListData, id_images, image_ids, trained_model
from torch import nn

from lgvq_tasks.config import RetrievalConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.retrieval import RetrievalTask, caption_bank, ranked_captions, recall_hits


class LookupGuidance(nn.Module):
    """A trained semantic head stand-in: image i's embedding is row i of ``table``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.code_vit = nn.Identity()
        self.losses = nn.ModuleDict({"semantic-nce": nn.Identity()})

    def image_embedding(self, quant: torch.Tensor) -> torch.Tensor:
        return self.table[image_ids(quant)]


def test_caption_bank_merges_identical_captions_and_records_owners():
    bank, owned = caption_bank([["a red circle", "a circle"], ["a blue square"], ["a circle"]])
    assert bank == ["a red circle", "a circle", "a blue square"]
    assert owned == [[0, 1], [2], [1]]


def test_recall_hits_any_own_caption_within_k():
    ranked = torch.tensor([[2, 0, 1], [0, 1, 2]])  # image 0 ranks caption 2 first; image 1 ranks caption 0 first
    owned = [[0], [1, 2]]
    hits = recall_hits(ranked, owned, [1, 2, 3])
    assert hits[1].tolist() == [0.0, 0.0]
    assert hits[2].tolist() == [1.0, 1.0]
    assert hits[3].tolist() == [1.0, 1.0]


def test_ranked_captions_orders_by_cosine_not_dot_product():
    images = torch.tensor([[1.0, 0.0]])
    texts = torch.tensor([[10.0, 10.0], [0.5, 0.0], [-1.0, 0.0]])  # longest vector is not the most similar
    assert ranked_captions(images, texts, 3).tolist() == [[1, 0, 2]]


def test_recall_at_1_is_one_when_each_image_embeds_as_its_own_caption(text_encoder, tmp_path):
    captions = [["a red circle"], ["two blue squares"], ["a green star above a triangle"], ["a small yellow diamond"]]
    sentences = text_encoder.encode([c[0] for c in captions]).sentence
    model = trained_model(IdentityTokenizer(), LookupGuidance(sentences * 3.0), text_encoder)
    data = ListData(id_images(4), captions)

    results = RetrievalTask(RetrievalConfig(ks=[1, 2], report_images=2)).run(model, data, tmp_path)

    assert results["matcher"] == "model"
    assert results["r@1"] == 1.0 and results["r@2"] == 1.0
    assert results["images"] == 4 and results["captions"] == 4
    assert results["chance_r@1"] == pytest.approx(0.25)
    report = (tmp_path / "retrieval.html").read_text()
    assert report.count("data:image/png;base64,") == 2
    assert "a red circle" in report


def test_recall_counts_a_hit_on_any_caption_of_the_image(text_encoder, tmp_path):
    # image 0 embeds as its SECOND caption; image 1 as image 0's first caption (a miss at K = 1)
    captions = [["a red circle", "a circle that is red"], ["two blue squares"]]
    table = text_encoder.encode(["a circle that is red", "a red circle"]).sentence
    model = trained_model(IdentityTokenizer(), LookupGuidance(table), text_encoder)
    results = RetrievalTask(RetrievalConfig(ks=[1, 3], report_images=0)).run(
        model, ListData(id_images(2), captions), tmp_path
    )
    assert results["r@1"] == 0.5
    assert results["r@3"] == 1.0
    assert not (tmp_path / "retrieval.html").exists()


def test_model_matcher_on_a_run_without_semantic_head_says_to_use_the_probe(text_encoder, tmp_path):
    model = trained_model(IdentityTokenizer(), None, text_encoder)
    with pytest.raises(TaskError, match='matcher = "probe"'):
        RetrievalTask(RetrievalConfig(matcher="model")).run(model, ListData(id_images(2), [["a"], ["b"]]), tmp_path)


def test_a_run_without_text_encoder_is_told_how_to_add_one(tmp_path):
    model = trained_model(IdentityTokenizer(), None, None)
    with pytest.raises(TaskError, match="--set text_encoder.type=minilm"):
        RetrievalTask(RetrievalConfig()).run(model, ListData(id_images(2), [["a"], ["b"]]), tmp_path)
