"""WordNet for METEOR's synonym stage, from Debian's packages, without any download.

`nltk.corpus.wordnet` (nltk >= 3.9) reads a folder `<nltk_data>/corpora/wordnet/` holding the WordNet 3.0
database files. Debian's `wordnet-base` installs them in `/usr/share/wordnet/` and `wordnet-sense-index` adds
`index.sense`, which nltk >= 3.9 opens when the reader is created. Three facts (checked on nltk 3.10):

* nltk also opens `lexnames` (the table of the 45 lexicographer file names), which Debian does not ship: it is
  written here from `LEXNAMES` (the table in WordNet's `lexnames(5WN)` manual page);
* the files must be *copied*: nltk refuses a symbolic link that points outside its data folder
  ("Security Violation ... escapes root");
* the folder must be on `nltk.data.path` (the `NLTK_DATA` variable, `~/nltk_data`, `/usr/share/nltk_data`, ...):
  nltk refuses to open a corpus folder outside it ("Security Violation ... Unauthorized path").

`prepare(target)` does the copy; `python -m brainllm.evaluation.wordnet [--target DIR]` runs it
(scripts/setup-system.sh, the install step of `make test` and `make demo`, calls it after `apt-get install
wordnet-base wordnet-sense-index`; it needs only the standard library). `load()` returns a ready WordNet reader,
preparing a private copy under `~/.cache/brainllm/nltk_data` on first use when the Debian files are installed but no
prepared copy exists, or None when WordNet is not installed at all (METEOR then runs without synonyms and says so in
its variant name).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# Files the nltk reader opens: the four indexes and data files, the exception lists, index.sense and lexnames.
REQUIRED_FILES: tuple[str, ...] = tuple(
    [f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")]
    + [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")] + ["index.sense"]
)
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    """The `lexnames` file: one line per lexicographer file, `NN<TAB>name<TAB>syntactic category (1-4)`."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def source_missing(source: Path = DEBIAN_WORDNET) -> list[str]:
    """The WordNet files `source` lacks (empty when it can be prepared)."""
    return [name for name in REQUIRED_FILES if not (source / name).is_file()]


def default_target() -> Path:
    """Where `python -m brainllm.evaluation.wordnet` installs by default: the first entry of `$NLTK_DATA` if set,
    else `/usr/share/nltk_data` when writable (root), else `~/nltk_data`; all are on nltk's default search path."""
    env = os.environ.get("NLTK_DATA", "").split(os.pathsep)[0]
    if env:
        return Path(env)
    system = Path("/usr/share/nltk_data")
    probe = system if system.exists() else system.parent
    if os.access(probe, os.W_OK):
        return system
    return Path.home() / "nltk_data"


def cache_target() -> Path:
    """The private copy `load()` makes on first use (`$BRAINLLM_NLTK_DATA` overrides it)."""
    env = os.environ.get("BRAINLLM_NLTK_DATA")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "brainllm" / "nltk_data"


def prepare(target: Path, source: Path = DEBIAN_WORDNET) -> Path:
    """Copy WordNet from `source` into `target/corpora/wordnet` (atomically) and add `lexnames`.

    Returns the wordnet folder. Raises FileNotFoundError naming the missing files and the apt command when
    `source` is incomplete. A complete existing copy is left as it is.
    """
    missing = source_missing(source)
    if missing:
        raise FileNotFoundError(
            f"WordNet files {missing} not found in {source}; install them with "
            "`apt-get install --no-install-recommends wordnet-base wordnet-sense-index`."
        )
    final = Path(target) / "corpora" / "wordnet"
    if all((final / name).is_file() for name in REQUIRED_FILES + ("lexnames",)):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet.", dir=final.parent))
    try:
        for path in source.iterdir():
            if path.is_file():
                shutil.copyfile(path, staging / path.name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="ascii")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("WordNet prepared for nltk in %s", final)
    return final


def _reader_class() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class SynonymReader(WordNetCorpusReader):
        """nltk's WordNet reader minus `map_wn`, the WordNet-version mapping for multilingual (OMW) look-ups:
        nltk 3.10 builds it at construction by reading index.sense twice (about 7 s), and METEOR never uses it.
        Everything METEOR calls (`synsets`, lemmas) is nltk's own code."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return SynonymReader


def _try_reader() -> Optional[Any]:
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            root = nltk.data.find(resource)
        except LookupError:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed
                reader = _reader_class()(root, None)
            reader.synsets("dog")
        except (OSError, ValueError, AssertionError) as err:
            log.debug("WordNet in %s not usable: %s", root, err)
            continue
        return reader
    return None


@lru_cache(maxsize=1)
def load() -> Optional[Any]:
    """A working nltk WordNet reader, or None when WordNet is not installed (see the module docstring)."""
    import nltk

    reader = _try_reader()
    if reader is not None:
        return reader
    if source_missing():
        log.warning("WordNet is not installed, so METEOR runs without synonym matching (variant "
                    "'meteor_exact_stem'); `apt-get install wordnet-base wordnet-sense-index` adds it.")
        return None
    target = cache_target()
    try:
        prepare(target)
    except OSError as err:
        log.warning("Could not prepare WordNet in %s (%s); METEOR runs without synonyms.", target, err)
        return None
    if str(target) not in nltk.data.path:
        nltk.data.path.insert(0, str(target))  # first, ahead of any broken copy elsewhere
    return _try_reader()


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: prepare WordNet for nltk (used by scripts/setup-system.sh after the apt install)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=None,
                        help="nltk data folder to install into (default: see default_target()).")
    parser.add_argument("--source", type=Path, default=DEBIAN_WORDNET, help="Folder with the WordNet files.")
    args = parser.parse_args(argv)
    target = args.target or default_target()
    try:
        folder = prepare(target, args.source)
    except (FileNotFoundError, PermissionError) as err:
        print(f"brainllm: {err}", file=sys.stderr)
        return 1
    print(f"WordNet for nltk: {folder}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
