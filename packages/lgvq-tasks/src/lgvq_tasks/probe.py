"""Where retrieval, masked words and relation get their code ViT and heads.

``matcher = "model"`` uses the run's trained alignment module. A baseline has none, so
``matcher = "probe"`` trains one on the frozen codes of the train split first (a project decision;
docs/method.md: Evaluation protocols):
a code ViT with the semantic-nce and masked-text heads, built by the same factories as in
training, optimised on L = L_nce + L_mlm while the tokenizer stays frozen. One probe serves every
task of an evaluation that asks for the same probe options (it is kept in ``model.memo``).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from lgvq_core.api import BuildContext, build_component, collate
from lgvq_tasks.config import ProbeConfig
from lgvq_tasks.errors import TaskError
from lgvq_tasks.split import Progress, caption_features, encode_codes, require_text_encoder, train_split

#: The heads a probe trains, as run-file ``[[alignment]]`` types.
PROBE_LOSSES = ("semantic-nce", "masked-text")


def model_has(model: Any, loss: str | None) -> bool:
    """Whether the run trained ``loss`` (``None``: any loss that uses the code ViT)."""
    alignment = model.alignment
    if alignment is None or getattr(alignment, "code_vit", None) is None:
        return False
    return loss is None or loss in alignment.losses


def resolve_matcher(model: Any, task: str, choice: str, loss: str | None) -> str:
    """``"model"`` or ``"probe"`` for a task's ``matcher`` option (``auto``: model when trained)."""
    trained = model_has(model, loss)
    if choice == "auto":
        return "model" if trained else "probe"
    if choice == "model" and not trained:
        what = f"a {loss} alignment loss" if loss else "an alignment loss with the code ViT"
        raise TaskError(
            f'{task}: matcher = "model" needs a run trained with {what}, and this run has none; '
            'set matcher = "probe" (or "auto") to train a probe on its frozen codes'
        )
    return choice


def alignment_for(model: Any, task: str, choice: str, loss: str | None, probe: ProbeConfig) -> tuple[Any, str]:
    """The alignment module a task reads (eval mode) and which matcher it is."""
    matcher = resolve_matcher(model, task, choice, loss)
    if matcher == "model":
        return model.alignment, matcher
    key = f"probe{attrs.astuple(probe)}"
    if key not in model.memo:
        model.memo[key] = train_probe(model, probe, task)
    else:
        print(f"{task}: reusing the probe trained earlier in this evaluation", flush=True)
    return model.memo[key], matcher


def _code_vit_shape(model: Any, probe: ProbeConfig) -> tuple[int, int, int | None]:
    """Layers, heads and width of the probe's code ViT: the probe's own, else the run file's [code_vit]."""
    config = getattr(model.config, "code_vit", None)
    layers = probe.layers or (config.layers if config is not None else 2)
    heads = probe.heads or (config.heads if config is not None else 1)
    return layers, heads, getattr(config, "width", None)


def build_probe(model: Any, probe: ProbeConfig, quant_shape: torch.Size) -> Any:
    """An untrained code ViT + semantic-nce + masked-text module for codes of ``quant_shape`` (b D h w)."""
    from lgvq_core.api import build_alignment_module

    context = BuildContext(
        device=str(model.device),
        seed=probe.seed,
        text_encoder=model.text_encoder,
        code_dim=int(quant_shape[1]),
        latent_size=(int(quant_shape[2]), int(quant_shape[3])),
    )
    tables = {
        "semantic-nce": {"type": "semantic-nce"},
        "masked-text": {"type": "masked-text", "text_input": probe.text_input},
    }
    losses = [
        (name, build_component("alignment_loss", tables[name], f"probe.{name}", context), 1.0) for name in PROBE_LOSSES
    ]
    layers, heads, width = _code_vit_shape(model, probe)
    return build_alignment_module(losses, layers, heads, context, code_vit_width=width).to(model.device)


def train_probe(model: Any, probe: ProbeConfig, task: str) -> Any:
    """Train a probe on frozen codes of random train items; returns it in eval mode."""
    require_text_encoder(model, task)
    train = train_split(model, f"{task}'s probe")
    if len(train) < 2:
        raise TaskError(f"{task}: the probe needs at least 2 training images, the train split has {len(train)}")
    tokenizer = model.tokenizer
    devices = [model.device] if torch.device(model.device).type == "cuda" else []
    print(
        f"{task}: training a probe (code ViT + {' + '.join(PROBE_LOSSES)}) on frozen codes for {probe.steps} steps",
        flush=True,
    )
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(probe.seed)
        sampler = torch.Generator().manual_seed(probe.seed)
        alignment = None
        optimizer = None
        progress = Progress(task, probe.steps, probe.progress_every, what="probe step")
        for step in range(1, probe.steps + 1):
            indices = torch.randint(len(train), (probe.batch_size,), generator=sampler).tolist()
            seeds = torch.randint(2**31 - 1, (probe.batch_size,), generator=sampler).tolist()
            batch = collate([train[(i, s)] for i, s in zip(indices, seeds, strict=True)])
            if batch["image"] is None or batch["image"].shape[0] < 2:
                continue
            codes = encode_codes(tokenizer, batch["image"].to(model.device))
            quant = codes.quant.detach()
            if alignment is None:
                alignment = build_probe(model, probe, quant.shape)
                optimizer = torch.optim.Adam([p for p in alignment.parameters() if p.requires_grad], lr=probe.lr)
                alignment.train()
            text = caption_features(model, batch["caption"])
            terms = alignment(quant, text, tokenizer.quantizer.codebook.detach(), codes.indices, model.text_encoder)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.step(step, " ".join(f"{name} {float(value.detach()):.4f}" for name, value in terms.items()))
    if alignment is None:
        raise TaskError(f"{task}: every probe batch was empty (all train items unreadable?)")
    return alignment.eval()
