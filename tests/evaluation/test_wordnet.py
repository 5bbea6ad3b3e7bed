"""Preparing Debian's WordNet for nltk: copy, lexnames, and a working reader."""

import subprocess
import sys

import pytest

from brainllm.evaluation import wordnet


def test_lexnames_table_format():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"
    for i, line in enumerate(lines):
        number, name, category = line.split("\t")
        assert int(number) == i
        assert int(category) == {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]


def test_prepare_copies_files_and_adds_lexnames(tmp_path):
    source = tmp_path / "wn"
    source.mkdir()
    for name in wordnet.REQUIRED_FILES:
        (source / name).write_text(f"fake {name}\n")
    folder = wordnet.prepare(tmp_path / "nltk_data", source)
    assert folder == tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (folder / "lexnames").read_text() == wordnet.lexnames_text()
    assert not (folder / "index.sense").is_symlink()  # nltk refuses links that leave its data folder
    assert (folder / "index.sense").read_text() == "fake index.sense\n"
    assert wordnet.prepare(tmp_path / "nltk_data", source) == folder  # idempotent


def test_prepare_names_missing_files(tmp_path):
    (tmp_path / "wn").mkdir()
    with pytest.raises(FileNotFoundError, match="wordnet-sense-index"):
        wordnet.prepare(tmp_path / "out", tmp_path / "wn")


def test_module_command_line(tmp_path):
    source = tmp_path / "wn"
    source.mkdir()
    for name in wordnet.REQUIRED_FILES:
        (source / name).write_text("x\n")
    out = subprocess.run([sys.executable, "-m", "brainllm.evaluation.wordnet", "--source", str(source), "--target",
                          str(tmp_path / "data")], capture_output=True, text=True, check=True)
    assert "corpora/wordnet" in out.stdout
    assert (tmp_path / "data" / "corpora" / "wordnet" / "lexnames").is_file()


@pytest.mark.skipif(wordnet.source_missing() != [], reason="Debian WordNet not installed "
                    "(apt-get install wordnet-base wordnet-sense-index)")
def test_prepared_debian_wordnet_works_with_nltk(tmp_path, monkeypatch):
    """A fresh copy of /usr/share/wordnet, alone on nltk's search path, gives a working reader: lexnames (added),
    index.sense (sense keys). nltk only opens corpus folders that are on nltk.data.path."""
    import nltk

    wordnet.prepare(tmp_path / "nltk_data")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    reader = wordnet._try_reader()
    assert reader is not None
    assert str(tmp_path) in str(reader.root)
    assert reader.synsets("dog")[0].name() == "dog.n.01"
    assert reader.synset("dog.n.01").lexname() == "noun.animal"  # read through lexnames
    assert reader.lemma_from_key("dog%1:05:00::").name() == "dog"  # read through index.sense
    assert reader.get_version() == "3.0"
