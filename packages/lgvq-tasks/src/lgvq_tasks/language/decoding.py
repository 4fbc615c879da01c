"""Caption decoding from a prefix: batched greedy and beam search with a key/value cache.

Every function takes a language model of :mod:`.language_model` (``lm(embeds, cache, keep_logits)``
returns ``(logits, hidden, cache)``) and a batch of prefixes ``b P W``; it returns one list of token ids per
image, EOS excluded. The prefix is encoded once; each further step feeds only the newest token and
reuses the cached keys and values. :func:`greedy_decode_uncached` is ClipCap's reference loop (one
image, the whole sequence recomputed every step): the equivalence test and ``bench/caption_decode.py``
compare against it.
"""

from __future__ import annotations

import torch


def _check(prefix: torch.Tensor, max_length: int) -> None:
    if prefix.dim() != 3:
        raise ValueError(f"prefix must be b x P x W, got shape {tuple(prefix.shape)}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")


def _cut(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


@torch.no_grad()
def greedy_decode(lm, prefix: torch.Tensor, max_length: int) -> list[list[int]]:
    """Batched greedy decoding with the cache: at most ``max_length`` tokens per image (EOS counted).

    Rows that emitted EOS leave the batch (their cache rows are dropped), so a step costs only the
    captions still open.
    """
    _check(prefix, max_length)
    logits, _, cache = lm(prefix, None, keep_logits=1)
    results: list[list[int]] = [[] for _ in range(prefix.shape[0])]
    active = list(range(prefix.shape[0]))  # batch row -> image
    for step in range(max_length):
        tokens = logits[:, -1].argmax(-1)  # rows
        open_rows = []
        for row, token in enumerate(tokens.tolist()):
            image = active[row]
            if token == lm.eos_id:
                continue
            results[image].append(token)
            open_rows.append(row)
        if step + 1 == max_length or not open_rows:
            break
        if len(open_rows) < len(active):
            keep = torch.tensor(open_rows, device=prefix.device)
            cache = lm.reorder_cache(cache, keep)
            tokens = tokens.index_select(0, keep)
            active = [active[row] for row in open_rows]
        logits, _, cache = lm(lm.embed(tokens[:, None]), cache, keep_logits=1)
    return results


@torch.no_grad()
def greedy_decode_uncached(lm, prefix: torch.Tensor, max_length: int) -> list[list[int]]:
    """One image at a time, recomputing the whole [prefix; tokens] sequence every step (no cache)."""
    _check(prefix, max_length)
    results = []
    for image in range(prefix.shape[0]):
        embeds = prefix[image : image + 1]
        tokens: list[int] = []
        for _ in range(max_length):
            logits, _, _ = lm(embeds, None, keep_logits=1)
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            if token == lm.eos_id:
                break
            embeds = torch.cat([embeds, lm.embed(torch.tensor([[token]], device=prefix.device))], dim=1)
        results.append(_cut(tokens, lm.eos_id))
    return results


@torch.no_grad()
def beam_search(
    lm, prefix: torch.Tensor, beam_size: int, max_length: int, length_penalty: float = 1.0
) -> list[list[int]]:
    """Batched beam search with the cache; each image's best hypothesis by ``sum log p / length**penalty``.

    A hypothesis that emitted EOS stays in its beam at a fixed score (it can only extend with EOS, at no
    cost), so finished and open hypotheses compete until every beam of every image has ended. The length
    counts the EOS token. With one beam this is exactly greedy decoding.
    """
    _check(prefix, max_length)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    b, k = prefix.shape[0], beam_size
    device = prefix.device
    logits, _, cache = lm(prefix.repeat_interleave(k, 0), None, keep_logits=1)  # (b k) P W
    log_probs = logits[:, -1].float().log_softmax(-1)  # (b k) V
    vocab = log_probs.shape[-1]
    if k > vocab:
        raise ValueError(f"beam_size {k} exceeds the vocabulary of {vocab} tokens")
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, k, device=device)
    tokens = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    only_eos = torch.full((vocab,), float("-inf"), device=device)
    only_eos[lm.eos_id] = 0.0
    for step in range(max_length):
        log_probs = torch.where(finished[..., None], only_eos, log_probs.view(b, k, vocab))
        candidates = (scores[..., None] + log_probs).view(b, k * vocab)
        scores, chosen = candidates.topk(k, dim=1)  # b k
        source, token = chosen // vocab, chosen % vocab
        tokens = torch.cat([tokens.gather(1, source[..., None].expand(-1, -1, tokens.shape[2])), token[..., None]], 2)
        was_finished = finished.gather(1, source)
        lengths = lengths.gather(1, source) + (~was_finished).float()
        finished = was_finished | (token == lm.eos_id)
        if step + 1 == max_length or bool(finished.all()):
            break
        rows = (source + torch.arange(b, device=device)[:, None] * k).view(-1)
        cache = lm.reorder_cache(cache, rows)
        logits, _, cache = lm(lm.embed(token.view(-1, 1)), cache, keep_logits=1)
        log_probs = logits[:, -1].float().log_softmax(-1)
    ranked = scores / lengths.clamp_min(1.0) ** length_penalty if length_penalty else scores
    best = ranked.argmax(1)
    chosen_tokens = tokens[torch.arange(b, device=device), best].tolist()
    return [_cut(row, lm.eos_id) for row in chosen_tokens]
