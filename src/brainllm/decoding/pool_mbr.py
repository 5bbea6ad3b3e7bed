"""Minimum-Bayes-risk picks against what the frames say was read, training sentences included (beyond the paper).

`mbr` weighs a sample's candidates by the decoder's own posterior, so where BrainLLM's draws miss the sentence's
topic, so does their centre. The encoding model also scores the training sentences (`retrieval.retrieval_scores`):
real sentences, often from passages on the sample's topic. Here the posterior over what was read is uniform over
the sample's candidates and its `top` likeliest training sentences (those equal to a candidate dropped), times the
encoding model's likelihood tempered by β:

    p(h | frames) ∝ exp(β · log p(frames | prompt + h)),   h ∈ candidates ∪ top training sentences,

and the pick is the *candidate* c (the output is always written by the LM) of the highest expected similarity
Σ_h p(h | frames) · sim(c, h). The declared similarity blends meaning and words:

    sim(a, b) = w · cos(MiniLM(a), MiniLM(b)) + (1 − w) · word_f1(a, b)

with MiniLM the sentence model of `data.features`, the model of the semantic metric too (so that metric rewards
this pick partly by construction; the report's controls decide by the same rule). The look-up baseline decides by
the same rule among the training sentences alone (`lookup_index`), so the two differ only in where the text comes
from. A one-hot posterior returns its text; a uniform one, the medoid under `sim`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import GenerationConfig
from ..data.features import sentence_embeddings
from .candidates import Candidates
from .mbr import mbr_index, word_f1, words


@dataclass(frozen=True)
class PoolMBR:
    """The rule's settings: `beta` tempers the encoding log-likelihood, `top` training sentences join the
    hypotheses, `meaning_weight` is w in the similarity (module docstring)."""

    beta: float
    top: int
    meaning_weight: float

    @classmethod
    def of(cls, cfg: GenerationConfig) -> "PoolMBR":
        return cls(cfg.pool_mbr_beta, cfg.pool_mbr_top, cfg.mbr_meaning_weight)

    def similarity(self, cos: np.ndarray, f1: np.ndarray) -> np.ndarray:
        """The declared similarity from its two parts (`similarity_parts`): w · cos + (1 − w) · word F1."""
        return self.meaning_weight * cos + (1 - self.meaning_weight) * f1


class SentenceVectors:
    """MiniLM unit vectors `(n, 384)` of texts (`data.features.sentence_embeddings`), each text embedded once."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            for text, vector in zip(todo, sentence_embeddings(todo).astype(np.float64)):
                self._cache[text] = vector
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))


def similarity_parts(texts: Sequence[str], hypotheses: Sequence[str], vectors) -> tuple[np.ndarray, np.ndarray]:
    """`(n, m)` MiniLM cosines and `(n, m)` word F1s between `texts` and `hypotheses` (`vectors`: a
    `SentenceVectors` or any callable giving unit vectors)."""
    vec = vectors(list(texts) + list(hypotheses))
    bags = [words(t) for t in hypotheses]
    f1 = np.array([[word_f1(words(a), b) for b in bags] for a in texts]).reshape(len(texts), len(hypotheses))
    return vec[:len(texts)] @ vec[len(texts):].T, f1


def top_hypotheses(scores: np.ndarray, top: int, exclude: Sequence[str] = (), pool: Sequence[str] = ()) -> np.ndarray:
    """Indices of the `top` highest of `scores` `(n_pool,)` (ties to the earlier), skipping pool texts in
    `exclude`."""
    excluded = {t.strip() for t in exclude}
    order = [int(j) for j in np.argsort(-np.asarray(scores), kind="stable")
             if not excluded or pool[j].strip() not in excluded]
    return np.array(order[:top], dtype=np.int64)


class PoolMBRPicker:
    """`pool_mbr` picks for one set of candidates and its evidence; each sample's similarity blocks (every candidate
    against every candidate and its top training sentences) are computed once and sliced per setting.

    Args:
        cands: the scored candidates (`encoding` filled).
        pool: the training sentences.
        pool_scores: `(n_samples, n_pool)` log p(frames | prompt + pool text), comparable with `cands.encoding`
            (`retrieval.retrieval_scores` with the same scorer and frames).
        top: how many of the likeliest pool texts join each sample's hypotheses.
        vectors: a shared `SentenceVectors` (a new one when None).
    """

    def __init__(self, cands: Candidates, pool: Sequence[str], pool_scores: np.ndarray, top: int,
                 vectors: SentenceVectors | None = None) -> None:
        if len(pool_scores) != len(cands.texts):
            raise ValueError(f"{len(pool_scores)} rows of pool scores for {len(cands.texts)} samples.")
        self.cands, self.pool, self.pool_scores, self.top = cands, list(pool), np.asarray(pool_scores), top
        self.vectors = vectors or SentenceVectors()
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _block(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample i's (`(n_c, n_c + k)` cosines, the same word_f1, `(k,)` pool indices, `(n_c + k,)` scores)."""
        if i not in self._blocks:
            texts = self.cands.texts[i]
            idx = top_hypotheses(self.pool_scores[i], self.top, texts, self.pool)
            cos, f1 = similarity_parts(texts, list(texts) + [self.pool[j] for j in idx], self.vectors)
            scores = np.concatenate([self.cands.encoding[i], self.pool_scores[i][idx]])
            self._blocks[i] = (cos, f1, idx, scores)
        return self._blocks[i]

    def pick(self, rule: PoolMBR, n_candidates: int | None = None) -> list[int]:
        """Index of the chosen candidate of each sample among those `Candidates.considered` offers
        (`n_candidates`), under `rule` (its `top` at most this picker's)."""
        if rule.top > self.top:
            raise ValueError(f"rule.top {rule.top} exceeds the picker's {self.top}.")
        out = []
        for i in range(len(self.cands.texts)):
            cos, f1, idx, scores = self._block(i)
            rows = self.cands.considered(i, n_candidates)
            cols = np.concatenate([rows, len(self.cands.texts[i]) + np.arange(min(rule.top, len(idx)))])
            sim = rule.similarity(cos[np.ix_(rows, cols)], f1[np.ix_(rows, cols)])
            out.append(int(rows[mbr_index(sim, rule.beta * scores[cols])]))
        return out

    def picks(self, rule: PoolMBR, n_candidates: int | None = None) -> list[str]:
        """The text `pick` chooses for each sample."""
        return [texts[k] for texts, k in zip(self.cands.texts, self.pick(rule, n_candidates))]


def lookup_index(pool: Sequence[str], scores: np.ndarray, rule: PoolMBR, vectors: SentenceVectors | None = None
                 ) -> int:
    """The look-up under the same rule: among the `rule.top` pool texts likeliest under `scores` `(n_pool,)`, the
    one of the highest expected similarity to them under p(h | frames) ∝ exp(β · score)."""
    idx = top_hypotheses(scores, rule.top)
    hyps = [pool[j] for j in idx]
    sim = rule.similarity(*similarity_parts(hyps, hyps, vectors or SentenceVectors()))
    return int(idx[mbr_index(sim, rule.beta * np.asarray(scores)[idx])])
