"""WordNet read offline: the NLTK layout built from the system's WordNet files, and the install hint."""

from __future__ import annotations

import pytest

from lgvq_core import wordnet
from lgvq_core.wordnet import INSTALL_HINT, LEXNAMES, WordNetUnavailable


def test_layout_copies_the_dict_files_and_writes_lexnames(tmp_path):
    source = tmp_path / "dict"
    source.mkdir()
    for name in wordnet.REQUIRED_FILES:
        (source / name).write_text(f"contents of {name}\n")
    folder = wordnet.build_layout(source, tmp_path / "nltk_data")
    assert folder == tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (folder / "data.noun").read_text() == "contents of data.noun\n" and not (folder / "data.noun").is_symlink()
    lines = (folder / "lexnames").read_text().splitlines()
    assert len(lines) == 45 and lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[25] == "25\tnoun.shape\t1" and lines[44] == "44\tadj.ppl\t3"
    assert wordnet.build_layout(source, tmp_path / "nltk_data") == folder  # again: nothing changes
    assert len(LEXNAMES) == 45


def test_missing_wordnet_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(wordnet, "SYSTEM_DIRS", (str(tmp_path / "none"),))
    monkeypatch.setattr(wordnet, "_installed_nltk_wordnet", lambda: None)
    assert wordnet.system_wordnet_dir() is None
    with pytest.raises(WordNetUnavailable) as caught:
        wordnet.prepare_wordnet()
    assert str(caught.value) == INSTALL_HINT
    assert "apt-get install wordnet-base wordnet-sense-index" in INSTALL_HINT


@pytest.mark.skipif(not wordnet.wordnet_available(), reason=INSTALL_HINT)
def test_the_system_wordnet_reads_as_wordnet_3_0():
    reader = wordnet.load_wordnet()
    assert reader.get_version() == "3.0"
    circle = wordnet.noun_synsets("circles")[0]  # a plural finds its base form
    assert circle.name() == "circle.n.01" and circle.lexname() == "noun.shape"
    assert wordnet.noun_synsets("quickly") == []  # an adverb has no noun synset
