"""VQCT's word prior: adjective and noun nodes, adjective–noun edges and a vector per word (docs/method.md: VQCT).

Built once per training set and cached:

1. Tag every training caption (:mod:`lgvq_backbones.vqct.tagging`). A token tagged ``JJ`` is an
   adjective (the lowercased token); one tagged ``NN``, ``NNS``, ``NNP`` or ``NNPS`` is a noun (its lemma).
2. Keep the adjectives and the nouns seen more than ``min_frequency`` times (official: > 10).
   Adjective and noun nodes are separate even when a word is both (``light``).
3. Every adjacent ``JJ`` → noun bigram of a caption is one undirected edge between the two kept
   words; a pair seen c times has weight c (torch_geometric sums the official code's repeated edges).
4. Each word's vector is the text encoder's sentence embedding of ``"a photo of {word} object"``
   (adjectives) or ``"a photo of {word}"`` (nouns).

Nodes are ordered adjectives first, then nouns, each by decreasing frequency (ties alphabetical).

**Word-list files** replace steps 1–3 (``word_list`` key). Two formats:

* JSON: ``{"adjectives": ["red", ...], "nouns": ["car", ...], "edges": [["red", "car"], ...]}``;
  an edge may carry a weight as a third item (``["red", "car", 12]``); ``edges`` may be omitted.
* TSV (any other suffix): one record per line, tab-separated; ``word<TAB>TAG`` declares a node
  (TAG ``JJ`` for an adjective, any ``NN*`` for a noun), ``adjective<TAB>noun<TAB>weight`` an edge.
  Blank lines and lines starting with ``#`` are ignored.

Node order is the file's. Every built prior is also written as JSON next to the cache file, ready to
be inspected, edited and fed back through ``word_list``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lgvq_backbones.vqct.tagging import TaggedToken, load_tagger
from lgvq_core.api import write_bytes_atomic, write_json_atomic

#: Bump when the way a prior is built changes: cached priors of other versions are rebuilt.
PRIOR_VERSION = 1

_NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
_ADJECTIVE_TAG = "JJ"
_TAG_CHUNK = 1024


class WordPriorError(ValueError):
    """The word prior cannot be built; ``key`` names the option to change (or ``text_encoder``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class WordCounts:
    """Frequencies gathered from tagged captions."""

    adjectives: Counter = field(default_factory=Counter)
    nouns: Counter = field(default_factory=Counter)
    #: (adjective, noun lemma) -> number of adjacent JJ → noun bigrams
    bigrams: Counter = field(default_factory=Counter)

    def add(self, tagged_caption: Sequence[TaggedToken]) -> None:
        previous_adjective: str | None = None
        for item in tagged_caption:
            token, tag = str(item[0]).lower(), str(item[1])
            lemma = str(item[2]).lower() if len(item) > 2 else token
            if tag == _ADJECTIVE_TAG:
                self.adjectives[token] += 1
                previous_adjective = token
                continue
            if tag in _NOUN_TAGS:
                self.nouns[lemma] += 1
                if previous_adjective is not None:
                    self.bigrams[(previous_adjective, lemma)] += 1
            previous_adjective = None


@dataclass
class WordGraph:
    """Adjective and noun nodes with weighted undirected adjective–noun edges."""

    adjectives: list[str]
    nouns: list[str]
    #: (adjective, noun) -> weight
    edges: dict[tuple[str, str], float]

    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions of every edge as node indices (2×2M, adjectives first) and their weights (2M)."""
        adjective_node = {word: i for i, word in enumerate(self.adjectives)}
        noun_node = {word: len(self.adjectives) + i for i, word in enumerate(self.nouns)}
        pairs = [(adjective_node[a], noun_node[n], w) for (a, n), w in self.edges.items()]
        if not pairs:
            return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
        source = torch.tensor([p[0] for p in pairs])
        target = torch.tensor([p[1] for p in pairs])
        weight = torch.tensor([float(p[2]) for p in pairs])
        index = torch.stack([torch.cat([source, target]), torch.cat([target, source])])
        return index, torch.cat([weight, weight])

    def to_json(self) -> dict:
        return {
            "adjectives": list(self.adjectives),
            "nouns": list(self.nouns),
            "edges": [[a, n, w] for (a, n), w in self.edges.items()],
        }


def _by_frequency(counts: Counter, min_frequency: int) -> list[str]:
    kept = [word for word, count in counts.items() if count > min_frequency]
    return sorted(kept, key=lambda word: (-counts[word], word))


def select_words(counts: WordCounts, min_frequency: int, binary_edges: bool = False) -> WordGraph:
    """Keep words seen more than ``min_frequency`` times and the bigram edges between kept words."""
    adjectives = _by_frequency(counts.adjectives, min_frequency)
    nouns = _by_frequency(counts.nouns, min_frequency)
    kept_adjectives, kept_nouns = set(adjectives), set(nouns)
    edges = {
        pair: 1.0 if binary_edges else float(count)
        for pair, count in sorted(counts.bigrams.items())
        if pair[0] in kept_adjectives and pair[1] in kept_nouns
    }
    return WordGraph(adjectives, nouns, edges)


def count_tagged(captions: Iterable[str], tagger: Callable[[list[str]], Sequence[Sequence[TaggedToken]]]) -> WordCounts:
    """Tag captions in chunks and count adjectives, nouns and adjective–noun bigrams."""
    counts = WordCounts()
    chunk: list[str] = []

    def flush() -> None:
        tagged = tagger(chunk)
        if len(tagged) != len(chunk):
            raise ValueError(f"the tagger returned {len(tagged)} tagged captions for {len(chunk)} captions")
        for caption in tagged:
            counts.add(caption)
        chunk.clear()

    for caption in captions:
        chunk.append(caption)
        if len(chunk) >= _TAG_CHUNK:
            flush()
    if chunk:
        flush()
    return counts


def read_word_list(path: str | Path) -> WordGraph:
    """Read a JSON or TSV word-list file (formats in the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the vqct word list {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        return _parse_json_word_list(text, path)
    return _parse_tsv_word_list(text, path)


def _parse_json_word_list(text: str, path: Path) -> WordGraph:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("adjectives"), list)
        or not isinstance(data.get("nouns"), list)
    ):
        raise ValueError(f'{path}: expected an object with lists "adjectives" and "nouns" (and optionally "edges")')
    edges: dict[tuple[str, str], float] = {}
    for i, edge in enumerate(data.get("edges", [])):
        if not isinstance(edge, list) or len(edge) not in (2, 3):
            raise ValueError(f"{path}: edges[{i}] must be [adjective, noun] or [adjective, noun, weight], got {edge!r}")
        weight = edge[2] if len(edge) == 3 else 1.0
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
            raise ValueError(f"{path}: edges[{i}] weight must be a positive number, got {weight!r}")
        key = (str(edge[0]), str(edge[1]))
        edges[key] = edges.get(key, 0.0) + float(weight)
    return _checked_graph([str(w) for w in data["adjectives"]], [str(w) for w in data["nouns"]], edges, path)


def _parse_tsv_word_list(text: str, path: Path) -> WordGraph:
    adjectives: list[str] = []
    nouns: list[str] = []
    edges: dict[tuple[str, str], float] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        columns = [c.strip() for c in line.split("\t")]
        if len(columns) == 2 and columns[1] == _ADJECTIVE_TAG:
            adjectives.append(columns[0])
        elif len(columns) == 2 and columns[1].startswith("NN"):
            nouns.append(columns[0])
        elif len(columns) == 3:
            try:
                weight = float(columns[2])
            except ValueError:
                weight = -1.0
            if weight <= 0:
                raise ValueError(f"{path}:{number}: edge weight must be a positive number, got {columns[2]!r}")
            key = (columns[0], columns[1])
            edges[key] = edges.get(key, 0.0) + weight
        else:
            raise ValueError(
                f"{path}:{number}: expected 'word<TAB>JJ', 'word<TAB>NN' or 'adjective<TAB>noun<TAB>weight', got {line!r}"
            )
    return _checked_graph(adjectives, nouns, edges, path)


def _checked_graph(
    adjectives: list[str], nouns: list[str], edges: dict[tuple[str, str], float], path: Path
) -> WordGraph:
    for role, words in (("adjective", adjectives), ("noun", nouns)):
        seen: set[str] = set()
        for word in words:
            if not word:
                raise ValueError(f"{path}: empty {role}")
            if word in seen:
                raise ValueError(f"{path}: {role} {word!r} is listed twice")
            seen.add(word)
    adjective_set, noun_set = set(adjectives), set(nouns)
    for adjective, noun in edges:
        if adjective not in adjective_set:
            raise ValueError(f"{path}: edge ({adjective!r}, {noun!r}) names an adjective that is not listed")
        if noun not in noun_set:
            raise ValueError(f"{path}: edge ({adjective!r}, {noun!r}) names a noun that is not listed")
    return WordGraph(adjectives, nouns, edges)


@dataclass
class WordPrior:
    """A word graph with one vector per node (adjectives first): the GCN's input."""

    graph: WordGraph
    #: (adjectives + nouns) × E
    vectors: torch.Tensor


@torch.no_grad()
def embed_words(
    graph: WordGraph, text_encoder, adjective_prompt: str, noun_prompt: str, batch_size: int = 256
) -> torch.Tensor:
    """Sentence embeddings (float32, CPU) of every word's prompt, adjectives first."""
    prompts = [adjective_prompt.format(word=w) for w in graph.adjectives] + [
        noun_prompt.format(word=w) for w in graph.nouns
    ]
    parts = [
        text_encoder.encode(prompts[start : start + batch_size]).sentence.float().cpu()
        for start in range(0, len(prompts), batch_size)
    ]
    return torch.cat(parts)


def _digest(parts: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode("utf-8"))
        hasher.update(b"\0")
    return hasher.hexdigest()


def _load_cached(path: Path, key: str) -> WordPrior | None:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable cache entry is rebuilt
        return None
    if not isinstance(data, dict) or data.get("version") != PRIOR_VERSION or data.get("key") != key:
        return None
    edges = {(a, n): float(w) for a, n, w in data["edges"]}
    return WordPrior(WordGraph(list(data["adjectives"]), list(data["nouns"]), edges), data["vectors"])


def build_word_prior(
    *,
    text_encoder,
    captions: Callable[[], Iterable[str]] | None,
    word_list: str | None,
    tagger: str,
    min_frequency: int,
    binary_edges: bool,
    adjective_prompt: str,
    noun_prompt: str,
    cache_dir: str | None,
    log: Callable[[str], None] = print,
) -> WordPrior:
    """The word prior of a training set (or of a word-list file), from the cache when possible.

    The cache key covers :data:`PRIOR_VERSION`, every option above, the text encoder's identity and
    the captions (or the word-list file's content), so a change to any of them rebuilds the prior.
    Files are written atomically, so ranks building the same prior at once do not clash.
    """
    if text_encoder is None:
        raise WordPriorError(
            "text_encoder", "the vqct word prior needs a text encoder for its word vectors: add a [text_encoder] table"
        )
    if word_list is not None:
        try:
            source = "word list " + hashlib.sha256(Path(word_list).read_bytes()).hexdigest()
        except OSError as exc:
            raise WordPriorError("word_list", f"cannot read the vqct word list {word_list}: {exc}") from None
        caption_list: list[str] = []
    else:
        if captions is None:
            raise WordPriorError(
                "word_list",
                "the vqct word prior is built from the training captions, but none are available; "
                "give the quantizer a word_list file instead",
            )
        caption_list = [str(c) for c in captions()]
        source = f"captions {len(caption_list)} " + _digest(caption_list)
    settings = {
        "version": PRIOR_VERSION,
        "source": source,
        "tagger": tagger if word_list is None else None,
        "min_frequency": min_frequency if word_list is None else None,
        "binary_edges": binary_edges,
        "adjective_prompt": adjective_prompt,
        "noun_prompt": noun_prompt,
        "encoder": getattr(text_encoder, "identity", type(text_encoder).__name__),
    }
    key = _digest([json.dumps(settings, sort_keys=True)])
    cache_path = Path(cache_dir) / f"vqct-prior-{key[:16]}.pt" if cache_dir else None
    if cache_path is not None and cache_path.exists():
        cached = _load_cached(cache_path, key)
        if cached is not None:
            log(f"vqct: word prior loaded from {cache_path}")
            return cached

    if word_list is not None:
        try:
            graph = read_word_list(word_list)
        except ValueError as exc:
            raise WordPriorError("word_list", str(exc)) from None
        if binary_edges:
            graph.edges = dict.fromkeys(graph.edges, 1.0)
        origin = f"word list {word_list}"
    else:
        try:
            counts = count_tagged(caption_list, load_tagger(tagger))
        except (ValueError, RuntimeError) as exc:
            raise WordPriorError("tagger", f"tagging the captions with {tagger!r} failed: {exc}") from exc
        graph = select_words(counts, min_frequency, binary_edges)
        origin = f"{len(caption_list)} captions (tagger {tagger!r}, frequency > {min_frequency})"
    if not graph.adjectives or not graph.nouns:
        raise WordPriorError(
            "word_list" if word_list is not None else "min_frequency",
            f"the vqct word prior from {origin} has {len(graph.adjectives)} adjectives and "
            f"{len(graph.nouns)} nouns; it needs at least one of each: lower min_frequency or give a word_list file",
        )
    vectors = embed_words(graph, text_encoder, adjective_prompt, noun_prompt)
    prior = WordPrior(graph, vectors)
    log(
        f"vqct: word prior from {origin}: {len(graph.adjectives)} adjectives, {len(graph.nouns)} nouns, "
        f"{len(graph.edges)} adjective-noun edges, {vectors.shape[1]}-d word vectors"
    )
    if cache_path is not None:
        payload = {
            "version": PRIOR_VERSION,
            "key": key,
            "adjectives": graph.adjectives,
            "nouns": graph.nouns,
            "edges": [[a, n, w] for (a, n), w in graph.edges.items()],
            "vectors": vectors,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(cache_path, buffer.getvalue())
        words_path = cache_path.with_name(f"vqct-words-{key[:16]}.json")
        write_json_atomic(words_path, graph.to_json(), indent=1)
        log(f"vqct: word prior cached at {cache_path} (word list for review: {words_path})")
    return prior
