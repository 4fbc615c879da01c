"""``retrieval``: image-to-text retrieval with the global semantic head (the paper's Fig. 4).

docs/method.md: Evaluation protocols.

Each validation image's global embedding (code ViT global token -> projection, the vector the
semantic-nce loss trains) is compared by cosine with the sentence embedding of every distinct
caption of the split. Recall@K: the fraction of images with any of their own captions among the
K best. Identical caption strings are one entry, so two images sharing a caption both count it.
``retrieval.html`` shows images with their top-1 caption.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lgvq_tasks.config import RetrievalConfig
from lgvq_tasks.pictures import png_data_uri, to_pil
from lgvq_tasks.probe import alignment_for
from lgvq_tasks.split import caption_features, encode_codes, require_text_encoder, split_batches

#: Images scored against the caption bank at once.
SCORE_CHUNK = 256
#: Captions encoded at once.
TEXT_CHUNK = 256


def caption_bank(captions_per_image: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Distinct captions in order of appearance, and for each image the bank rows of its captions."""
    rows: dict[str, int] = {}
    owned: list[list[int]] = []
    for captions in captions_per_image:
        mine = []
        for caption in captions:
            mine.append(rows.setdefault(caption, len(rows)))
        owned.append(sorted(set(mine)))
    return list(rows), owned


def ranked_captions(images: torch.Tensor, texts: torch.Tensor, k: int) -> torch.Tensor:
    """n×k bank rows of the k captions most similar (cosine) to each image embedding (n×E vs m×E)."""
    texts = F.normalize(texts.float(), dim=-1)
    k = min(k, texts.shape[0])
    parts = []
    for start in range(0, images.shape[0], SCORE_CHUNK):
        chunk = F.normalize(images[start : start + SCORE_CHUNK].float(), dim=-1)
        parts.append((chunk @ texts.T).topk(k, dim=1).indices)  # c m -> c k
    return torch.cat(parts)


def recall_hits(ranked: torch.Tensor, owned: list[list[int]], ks: list[int]) -> dict[int, torch.Tensor]:
    """For each K, a per-image 0/1 tensor: is one of the image's captions among its first K ranked?"""
    hits = {}
    for k in ks:
        top = ranked[:, :k].tolist()
        hits[k] = torch.tensor(
            [float(any(row in set(mine) for row in best)) for best, mine in zip(top, owned, strict=True)]
        )
    return hits


class RetrievalTask:
    name = "retrieval"

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config

    @torch.no_grad()
    def run(self, model: Any, data: Any, out_dir: Path) -> dict[str, Any]:
        config = self.config
        require_text_encoder(model, self.name)
        alignment, matcher = alignment_for(model, self.name, config.matcher, "semantic-nce", config.probe)

        embeddings: list[torch.Tensor] = []
        captions_per_image: list[list[str]] = []
        shown: list[tuple[Any, str]] = []
        for batch in split_batches(self.name, data, model, config):
            codes = encode_codes(model.tokenizer, batch.images)
            embeddings.append(alignment.image_embedding(codes.quant).float().cpu())  # b e
            captions_per_image.extend(batch.captions)
            for image, caption in zip(batch.images, batch.caption, strict=True):
                if len(shown) < config.report_images:
                    shown.append((to_pil(image), caption))
        images = torch.cat(embeddings)

        bank, owned = caption_bank(captions_per_image)
        print(f"retrieval: ranking {len(bank)} distinct captions for {images.shape[0]} images", flush=True)
        texts = torch.cat(
            [
                caption_features(model, bank[i : i + TEXT_CHUNK]).sentence.float().cpu()
                for i in range(0, len(bank), TEXT_CHUNK)
            ]
        )
        ks = sorted(set(config.ks))
        ranked = ranked_captions(images, texts, max(ks))
        hits = recall_hits(ranked, owned, ks)

        results: dict[str, Any] = {"matcher": matcher, "images": images.shape[0], "captions": len(bank)}
        for k in ks:
            results[f"r@{k}"] = float(hits[k].mean())
        results["chance_r@1"] = sum(len(mine) for mine in owned) / (len(owned) * len(bank))

        if shown:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "retrieval.html"
            top1 = [bank[int(r)] for r in ranked[: len(shown), 0]]
            path.write_text(_report(shown, top1, hits[ks[0]] if ks[0] == 1 else None, results), encoding="utf-8")
            print(f"retrieval: wrote {path}", flush=True)
        return results


def _report(shown: list[tuple[Any, str]], top1: list[str], hit: torch.Tensor | None, results: dict[str, Any]) -> str:
    recalls = ", ".join(f"{k.upper()} {v:.3f}" for k, v in results.items() if k.startswith("r@"))
    rows = []
    for i, ((image, caption), best) in enumerate(zip(shown, top1, strict=True)):
        mark = "" if hit is None else ("hit" if hit[i] > 0 else "miss")
        rows.append(
            f'<tr><td><img src="{png_data_uri(image)}" width="128" height="128" alt="image {i}"></td>'
            f'<td><b>top-1:</b> {html.escape(best)} <span class="{mark}">{mark}</span><br>'
            f'<span class="truth">caption: {html.escape(caption)}</span></td></tr>'
        )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Image-to-text retrieval</title><style>'
        "body{font-family:sans-serif} td{padding:6px;vertical-align:middle} img{image-rendering:pixelated}"
        ".hit{color:#1a7f37}.miss{color:#b42318}.truth{color:#666}</style></head><body>"
        f"<h1>Image-to-text retrieval: top-1 captions</h1><p>{results['images']} images, {results['captions']} "
        f"distinct captions, matcher: {html.escape(str(results['matcher']))}. {recalls}.</p>"
        "<table>" + "".join(rows) + "</table></body></html>\n"
    )


def build_retrieval(config: RetrievalConfig, context: Any) -> RetrievalTask:
    return RetrievalTask(config)
