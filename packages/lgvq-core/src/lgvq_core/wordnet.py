"""WordNet 3.0 read offline through NLTK, from the operating system's WordNet files.

WUPS (the VQA metric of Malinowski & Fritz) and the check that every ``shapes`` answer word is a
WordNet noun both need WordNet, and nothing may be downloaded at run time. Debian and Ubuntu ship
WordNet 3.0's database as packages::

    apt-get install wordnet-base wordnet-sense-index

which put the ``dict`` files (``data.noun``, ``index.noun``, ``noun.exc``, ...) in
``/usr/share/wordnet``. NLTK reads the same files, laid out as ``<nltk data>/corpora/wordnet/``
plus a ``lexnames`` table that the packages lack. :func:`prepare_wordnet` builds that layout once
(copies of the system files, about 30 MB: NLTK refuses files linked from outside its folder; and
``lexnames`` written from :data:`LEXNAMES`) in
``$LGVQ_NLTK_DATA`` (default ``~/.cache/lgvq/nltk_data``) and puts it on ``nltk.data.path``.

An NLTK WordNet that is already installed (``nltk.download("wordnet")`` done earlier) is used as
it is. The WordNet files are found in ``$WNSEARCHDIR`` (WordNet's own variable) or the usual system
folders; when none holds them, :class:`WordNetUnavailable` says how to install them.

nltk is imported only when WordNet is asked for.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

from lgvq_core.errors import LgvqError

INSTALL_HINT = (
    "WordNet is not installed: apt-get install wordnet-base wordnet-sense-index "
    "(or set WNSEARCHDIR to a folder holding WordNet 3.0's dict files: data.noun, index.noun, ...)"
)

#: Folders where operating systems put WordNet's dict files.
SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/WordNet-3.0/dict")

#: The files NLTK's reader opens, besides ``lexnames`` (index.sense and cntlist.rev are optional).
REQUIRED_FILES: tuple[str, ...] = tuple(
    f"{part}.{pos}" for part in ("data", "index") for pos in ("noun", "verb", "adj", "adv")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
OPTIONAL_FILES: tuple[str, ...] = ("index.sense", "cntlist.rev", "cntlist")

#: WordNet 3.0's lexicographer files, in number order (``dict/lexnames`` of the WordNet release):
#: the second field of every synset line in ``data.*`` indexes this table.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)  # fmt: skip


class WordNetUnavailable(LgvqError):
    """WordNet's files are not on this machine; the message says how to install them."""


def system_wordnet_dir() -> Path | None:
    """The folder holding WordNet's dict files: ``$WNSEARCHDIR``, else a usual system folder."""
    candidates = [os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else []
    for folder in [*candidates, *SYSTEM_DIRS]:
        path = Path(folder).expanduser()
        if all((path / name).is_file() for name in REQUIRED_FILES):
            return path
    return None


def nltk_data_dir() -> Path:
    """Where the NLTK layout is built: ``$LGVQ_NLTK_DATA`` or ``~/.cache/lgvq/nltk_data``."""
    configured = os.environ.get("LGVQ_NLTK_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "lgvq" / "nltk_data"


def lexnames_text() -> str:
    return "".join(f"{number:02d}\t{name}\t{pos}\n" for number, (name, pos) in enumerate(LEXNAMES))


def build_layout(source: Path, data_dir: Path) -> Path:
    """``data_dir/corpora/wordnet`` with copies of ``source``'s files and a ``lexnames`` file.

    Idempotent and safe to run from several processes at once (each file is replaced atomically;
    a file already copied, same size and not older, is kept). Returns the ``corpora/wordnet`` folder.
    """
    target = data_dir / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        file = source / name
        if not file.is_file():
            continue
        copy = target / name
        wanted = file.stat()
        if copy.is_file() and copy.stat().st_size == wanted.st_size and copy.stat().st_mtime >= wanted.st_mtime:
            continue
        _replace(copy, file.read_bytes())
    lexnames = target / "lexnames"
    if not lexnames.is_file() or lexnames.read_text(encoding="utf-8") != lexnames_text():
        _replace(lexnames, lexnames_text().encode("utf-8"))
    return target


def _replace(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def _installed_nltk_wordnet() -> Path | None:
    """An NLTK WordNet found on ``nltk.data.path`` (downloaded earlier), or ``None``."""
    import nltk

    try:
        return Path(str(nltk.data.find("corpora/wordnet")))
    except LookupError:
        return None


def prepare_wordnet() -> Path:
    """Make WordNet readable by NLTK and return its ``corpora/wordnet`` folder.

    Raises :class:`WordNetUnavailable` with the install command when no WordNet is found.
    """
    try:
        import nltk
    except ImportError:
        raise WordNetUnavailable("WordNet needs nltk: pip install nltk; " + INSTALL_HINT) from None
    source = system_wordnet_dir()
    if source is None:
        installed = _installed_nltk_wordnet()
        if installed is not None and installed.is_dir():
            return installed
        raise WordNetUnavailable(INSTALL_HINT)
    data_dir = nltk_data_dir()
    try:
        folder = build_layout(source, data_dir)
    except OSError as exc:
        raise WordNetUnavailable(
            f"cannot lay out WordNet for nltk in {data_dir}: {exc}; set LGVQ_NLTK_DATA to a writable folder"
        ) from None
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    return folder


@functools.lru_cache(maxsize=1)
def load_wordnet() -> Any:
    """NLTK's WordNet reader over the prepared files (one per process)."""
    folder = prepare_wordnet()
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():  # "multilingual functions are not available": English is all we use
        warnings.simplefilter("ignore")
        return WordNetCorpusReader(str(folder), None)


def wordnet_available() -> bool:
    """Whether WordNet can be read here. Cheap when the system's files are found (nothing is
    imported or parsed), so test modules can ask it at collection time."""
    if importlib.util.find_spec("nltk") is None:
        return False
    if system_wordnet_dir() is not None:
        return True
    try:
        prepare_wordnet()
    except WordNetUnavailable:
        return False
    return True


def noun_synsets(word: str) -> list[Any]:
    """WordNet's noun synsets of ``word`` (its morphological base forms included, e.g. "circles")."""
    return load_wordnet().synsets(word, pos="n")
