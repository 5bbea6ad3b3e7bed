"""Text pre-processing shared by every lexical metric: special-string removal and one stated tokenisation.

Cleaning (`clean`): remove pad/eos/bos/unk strings that decoders leave in their output (`<|im_end|>`,
`<|endoftext|>`, any other `<|...|>` marker, `</s>`, `<s>`, `<eos>`, `<bos>`, `<pad>`, `<unk>`, `[PAD]`, `[CLS]`,
`[SEP]`, `[UNK]` and the SentencePiece unknown glyph `⁇`), apply Unicode NFKC normalisation, collapse runs of
whitespace to one space and strip both ends.

Tokenisation (`tokenize`, the variant named by `tokenization_name`): after cleaning, text is lower-cased (unless
`lowercase=False`) and split into *words*, maximal runs of Unicode letters/digits/underscore that may contain
inner apostrophes (`don't`, `l'eau` stay one token), and *punctuation marks*, each non-space non-word character
its own token (as `nltk.word_tokenize` separates them, which the paper used). `keep_punct=False` drops the
punctuation tokens. Punctuation-only text therefore tokenises to marks (or to nothing), never raises.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

SPECIAL_STRINGS: tuple[str, ...] = (
    "</s>", "<s>", "<eos>", "<bos>", "<pad>", "<unk>", "<mask>", "[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "⁇",
)
_PIPE_MARKER = re.compile(r"<\|[^<>|\s]{1,40}\|>")  # <|im_end|>, <|endoftext|>, <|eot_id|>, ...
_SPECIAL = re.compile("|".join(re.escape(s) for s in sorted(SPECIAL_STRINGS, key=len, reverse=True)))
_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")


def clean(text: str | None) -> str:
    """Remove special pad/eos strings, NFKC-normalise, collapse whitespace. `None` becomes ''."""
    if not text:
        return ""
    text = _PIPE_MARKER.sub(" ", str(text))
    text = _SPECIAL.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub(" ", text).strip()


def tokenize(text: str | None, lowercase: bool = True, keep_punct: bool = True) -> list[str]:
    """Clean then split `text` into word and punctuation tokens (see the module docstring)."""
    text = clean(text)
    if lowercase:
        text = text.lower()
    tokens = _TOKEN.findall(text)
    if not keep_punct:
        tokens = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    return tokens


def tokenization_name(lowercase: bool = True, keep_punct: bool = True) -> str:
    """A short name of the tokenisation, recorded beside every score (e.g. 'nfkc-lower-words+punct')."""
    return f"nfkc-{'lower' if lowercase else 'cased'}-words{'+punct' if keep_punct else ''}"


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens with single spaces (re-tokenising the result gives the same tokens back)."""
    return " ".join(tokens)
