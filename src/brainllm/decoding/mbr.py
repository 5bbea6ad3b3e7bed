"""Minimum-Bayes-risk picks (beyond the paper): instead of the candidate the decoder's posterior likes best (MAP),
the one with the highest expected similarity to the others under that posterior.

The posterior over a sample's distinct candidates is p(c) ∝ p_LM(c | prompt, frames) · p(frames | prompt + c)^λ;
the declared similarity is `word_f1`, the F1 of the two texts' word multisets (lower-cased, punctuation removed,
the unigram overlap BLEU-1 and ROUGE-1 reward). With a one-hot posterior MBR returns that candidate; with a uniform
one, the medoid. Where the posterior spreads over paraphrases of one sentence it picks their centre, which a
word-overlap metric rewards more than any single draw.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> Counter:
    """The word multiset `word_f1` compares: lower-cased runs of letters, digits and apostrophes."""
    return Counter(_WORD.findall(text.lower()))


def word_f1(a: Counter, b: Counter) -> float:
    """F1 of two word multisets' overlap (1 for two empty texts, 0 when only one is empty)."""
    if not a and not b:
        return 1.0
    shared = sum((a & b).values())
    total = sum(a.values()) + sum(b.values())
    return 2.0 * shared / total if total else 0.0


def similarity_matrix(texts: Sequence[str]) -> np.ndarray:
    """`(n, n)` symmetric `word_f1` between every pair of texts (1 on the diagonal)."""
    bags = [words(t) for t in texts]
    out = np.eye(len(texts))
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            out[i, j] = out[j, i] = word_f1(bags[i], bags[j])
    return out


def mbr_index(similarity: np.ndarray, log_weights: np.ndarray) -> int:
    """Index of the text with the highest expected similarity to the hypotheses under the posterior
    `softmax(log_weights)` `(m,)`: `similarity` `(n, m)` between the n texts to choose from and the m >= n
    hypotheses, whose first n are those texts (`(n, n)`, e.g. `similarity_matrix`, when they are all);
    ties go to the likeliest, then to the first."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    posterior = np.exp(log_weights - log_weights.max())
    posterior /= posterior.sum()
    gain = similarity @ posterior
    best = np.flatnonzero(np.isclose(gain, gain.max(), rtol=0, atol=1e-12))
    return int(best[np.argmax(posterior[:len(gain)][best])])
