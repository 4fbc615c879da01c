"""``codebook``: what each code looks like and how often it is used (the paper's Fig. 7).

docs/method.md: Evaluation protocols.

Each code e_k is decoded on its own as a 1×1 latent (``tokenizer.decode_indices`` on a k×1×1 index
grid, so the quantizer's own lookup and post-processing apply) into an f×f patch; the K patches are
tiled row by row into a ceil(√K)-wide grid, ``codebook.png``. ``code-usage.png`` is the histogram
of code counts over the validation split.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from lgvq_core.api import one_code_per_position
from lgvq_tasks.config import CodebookConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.pictures import save_png, tile, usage_histogram
from lgvq_tasks.split import LOCAL_METRIC, encode_codes, split_batches
from lgvq_tasks.usage import CodeUsage


@torch.no_grad()
def decode_each_code(tokenizer: Any, chunk: int = 256) -> torch.Tensor:
    """K×3×f×f: every code decoded from a 1×1 latent, in code order."""
    size = tokenizer.quantizer.codebook_size
    device = tokenizer.quantizer.codebook.device
    parts = []
    for start in range(0, size, chunk):
        indices = torch.arange(start, min(start + chunk, size), device=device).view(-1, 1, 1)  # k 1 1
        try:
            parts.append(tokenizer.decode_indices(indices).float().cpu())
        except (RuntimeError, ValueError, IndexError) as exc:
            raise TaskError(
                f"codebook: cannot decode single codes with this tokenizer ({type(exc).__name__}: {exc}); the task "
                "needs a quantizer with one code per latent position"
            ) from exc
    return torch.cat(parts)


def grid_columns(codebook_size: int) -> int:
    return math.ceil(math.sqrt(codebook_size))


class CodebookTask:
    name = "codebook"

    def __init__(self, config: CodebookConfig) -> None:
        self.config = config

    def requires(self, model: Any) -> str | None:
        """Refuse, before any work, a quantizer with several codes per position (``vqct``)."""
        return one_code_per_position(model, self.name)

    @torch.no_grad()
    def run(self, model: Any, data: Any, out_dir: Path) -> dict[str, Any]:
        config = self.config
        tokenizer = model.tokenizer
        size = tokenizer.quantizer.codebook_size
        print(f"codebook: decoding {size} codes one by one", flush=True)
        patches = decode_each_code(tokenizer, config.decode_batch)
        columns = grid_columns(size)
        picture = tile(patches.clamp(-1, 1), columns, config.patch_scale)
        codebook_path = save_png(picture, out_dir / "codebook.png")

        usage = CodeUsage(size, **LOCAL_METRIC).to(model.device)
        for batch in split_batches(self.name, data, model, config):
            usage.update(encode_codes(tokenizer, batch.images).indices)
        numbers = usage.compute()
        counts = usage.counts.cpu()
        histogram = usage_histogram(
            counts,
            f"code usage over the split: {numbers['usage']:.1%} of {size} codes, perplexity {numbers['perplexity']:.1f}",
        )
        histogram_path = save_png(histogram, out_dir / "code-usage.png")
        print(f"codebook: wrote {codebook_path} and {histogram_path}", flush=True)
        return {
            "codebook_size": size,
            "usage": numbers["usage"],
            "perplexity": numbers["perplexity"],
            "dead_codes": int((counts == 0).sum()),
            "top_code_share": float(counts.max() / counts.sum()) if counts.sum() > 0 else 0.0,
            "patch_size": int(patches.shape[-1]),
            "grid_columns": columns,
        }


def build_codebook(config: CodebookConfig, context: Any) -> CodebookTask:
    return CodebookTask(config)
