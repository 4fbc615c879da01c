"""Part-of-speech taggers for VQCT's word prior: offline, deterministic, pluggable.

A tagger is a callable ``tagger(captions: list[str]) -> list[list[tuple]]``: one list per caption
of ``(token, tag)`` or ``(token, tag, lemma)`` tuples, with Penn Treebank tags (``JJ`` adjectives,
``NN``/``NNS``/``NNP``/``NNPS`` nouns). When a tuple has no lemma the prior builder uses the
lowercased token. The run file names one with the quantizer key ``tagger``:

``"textblob"`` (default)
    TextBlob's port of pattern's Brill tagger. Its lexicon (Brill's Penn Treebank/Brown lexicon,
    ~100k words), suffix rules and contextual rules ship inside the ``textblob`` wheel, so it runs
    with no download. Plural nouns (``NNS``/``NNPS``) are singularised by TextBlob's rule-and-exception
    table (``glasses -> glass``, ``mice -> mouse``, ``species`` unchanged). Differences from the
    official prior: a rule-based tagger instead of NLTK's averaged perceptron, and rule-based
    singularisation instead of WordNet's lemmatiser, so a few words tag or lemmatise differently.
``"nltk"``
    The official VQCT pipeline: ``nltk.word_tokenize``, ``nltk.pos_tag`` and WordNet's noun
    lemmatiser. It needs NLTK's ``punkt_tab``, ``averaged_perceptron_tagger_eng`` and ``wordnet``
    data already on disk (lgvq never downloads them) and fails with instructions otherwise.
``"package.module:function"``
    Any importable callable with the signature above.

Captions are lowercased before tagging, as in the official builder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

#: (token, tag) or (token, tag, lemma)
TaggedToken = tuple
Tagger = Callable[[list[str]], Sequence[Sequence[TaggedToken]]]

BUILTIN_TAGGERS = ("textblob", "nltk")

_NLTK_DATA = ("tokenizers/punkt_tab", "taggers/averaged_perceptron_tagger_eng", "corpora/wordnet")


def textblob_tagger(captions: list[str]) -> list[list[TaggedToken]]:
    """Tag with TextBlob's bundled Brill tagger; plural nouns get a singular lemma."""
    from textblob.en import tag
    from textblob.en.inflect import singularize

    tagged = []
    for caption in captions:
        tokens = []
        for token, pos in tag(caption.lower(), tokenize=True):
            lemma = singularize(token) if pos in ("NNS", "NNPS") else token
            tokens.append((token, pos, lemma))
        tagged.append(tokens)
    return tagged


def nltk_tagger(captions: list[str]) -> list[list[TaggedToken]]:
    """The official pipeline (NLTK tokenizer, perceptron tagger, WordNet lemmatiser); needs local NLTK data."""
    import nltk
    from nltk.stem import WordNetLemmatizer

    missing = []
    for resource in _NLTK_DATA:
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(resource.rpartition("/")[2])
    if missing:
        raise RuntimeError(
            f'tagger "nltk" needs the NLTK data {", ".join(missing)}, which lgvq does not download; '
            f"install it where NLTK finds it (python -m nltk.downloader {' '.join(missing)}, or set "
            'NLTK_DATA), or use tagger = "textblob"'
        )
    lemmatizer = WordNetLemmatizer()
    tagged = []
    for caption in captions:
        tokens = [token.lower() for token in nltk.word_tokenize(caption)]
        tagged.append(
            [
                (token, pos, lemmatizer.lemmatize(token, "n") if pos.startswith("NN") else token)
                for token, pos in nltk.pos_tag(tokens)
            ]
        )
    return tagged


def load_tagger(name: str) -> Tagger:
    """The tagger a config names: ``"textblob"``, ``"nltk"`` or ``"module:callable"``."""
    if name == "textblob":
        return textblob_tagger
    if name == "nltk":
        return nltk_tagger
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'tagger must be "textblob", "nltk" or "module:callable", got {name!r}')
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"tagger {name!r}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"tagger {name!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ValueError(f"tagger {name!r} is not callable")
    return target
