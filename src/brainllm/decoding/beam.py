"""Beam-search pieces shared by the full-story decoders (Tang et al. 2023 and BrainLLM), their null model, and the
`DecodedStory` both return.

Both decoders follow Tang et al.'s scaffolding: every hypothesis holds the same number of words; each step the LM
proposes candidate next words per hypothesis; hypothesis h may keep `ceil(E * rank_h / |beam|)` extensions (rank 1 =
the least LM-probable hypothesis, so the most probable keeps E); the beam becomes the best `width` of the pool.
They differ only in how a candidate is scored (encoding-model likelihood vs brain-conditioned LM probability).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from .wordlm import INIT_WORDS, BeamState, ContextFilter, ProposalConfig, WordLM


@dataclass
class DecodedStory:
    """A decoded word sequence with its word times (s) and the decoder's settings."""

    words: list[str]
    times: np.ndarray
    settings: dict

    def to_json(self) -> dict:
        return {"words": self.words, "times": [round(float(t), 4) for t in self.times], "settings": self.settings}


@dataclass
class Beam:
    """The hypotheses of a beam: word indices `(B, i)`, summed LM log-probability `(B,)`, per-word log-probs."""

    words: np.ndarray                       # (B, i) int word indices into the LM's vocabulary
    lm_logprob: np.ndarray                  # (B,) summed LM log-probability of each hypothesis
    word_logprobs: np.ndarray               # (B, i) LM log-probability of each word
    state: BeamState | None = None          # the LM state whose rows are these hypotheses
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def n_words(self) -> int:
        return self.words.shape[1]


def extension_counts(lm_logprob: np.ndarray, extensions: int) -> np.ndarray:
    """`(B,)` extensions each hypothesis may keep: ceil(E * rank / B), rank 1 = least LM-probable (Tang)."""
    ranks = rankdata(lm_logprob, method="average")
    return np.ceil(extensions * ranks / len(lm_logprob)).astype(int).clip(1, extensions)


def first_candidates(lm: WordLM) -> list[tuple[int, float]]:
    """Tang's first-word candidates (i, we, she, he, they, it) with uniform log-probability."""
    words = [w for w in INIT_WORDS if w in lm.vocab]
    return [(lm.vocab.index(w), -math.log(len(words))) for w in words]


def empty_beam(lm: WordLM, prefix=None) -> Beam:
    """A beam of one empty hypothesis."""
    return Beam(np.zeros((1, 0), dtype=np.int64), np.zeros(1), np.zeros((1, 0)), lm.start([[]], prefix))


def candidates(lm: WordLM, beam: Beam, proposal: ProposalConfig, context_filter: ContextFilter
               ) -> list[list[tuple[int, float]]]:
    """Proposals per hypothesis; Tang's uniform first words at the start of a story."""
    if beam.n_words == 0:
        return [first_candidates(lm) for _ in range(len(beam))]
    return lm.propose(beam.state, proposal, context_filter)


def candidate_pool(lm: WordLM, beam: Beam, proposal: ProposalConfig, context_filter: ContextFilter
                   ) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """All hypotheses' candidates as one pool: `owners` `(N,)` (the hypothesis of each) and `(word, log p)` pairs.

    A hypothesis whose proposals were all filtered out keeps its single most probable word, so the beam never dies.
    """
    props = candidates(lm, beam, proposal, context_filter)
    for h, p in enumerate(props):
        if not p:
            lp = beam.state.logprobs[h]
            props[h] = [(int(lp.argmax()), float(lp.max()))]
    owners = np.concatenate([[h] * len(p) for h, p in enumerate(props)]).astype(np.int64)
    return owners, [c for p in props for c in p]


def grow(lm: WordLM, beam: Beam, parents: Sequence[int], words: Sequence[int], logps: Sequence[float],
         state: BeamState | None = None) -> Beam:
    """The beam of hypotheses `parents[r] + words[r]`; `state` if its rows already are these (else extended)."""
    parents = np.asarray(parents, dtype=np.int64)
    words_arr = np.asarray(words, dtype=np.int64)
    logps_arr = np.asarray(logps, dtype=float)
    if state is None:
        state = lm.extend(beam.state, parents.tolist(), words_arr.tolist())
    return Beam(np.concatenate([beam.words[parents], words_arr[:, None]], axis=1),
                beam.lm_logprob[parents] + logps_arr,
                np.concatenate([beam.word_logprobs[parents], logps_arr[:, None]], axis=1), state,
                {k: v[parents] for k, v in beam.extra.items()})


def select_pool(scores: np.ndarray, owners: np.ndarray, allowed: np.ndarray, width: int) -> np.ndarray:
    """Indices into a candidate pool: each owner keeps its `allowed[owner]` best-scoring candidates, then the best
    `width` of those survive. `scores`, `owners`: `(N,)`; returns survivors sorted by score, best first."""
    keep = []
    for h in np.unique(owners):
        mine = np.flatnonzero(owners == h)
        keep.extend(mine[np.argsort(-scores[mine], kind="stable")[: allowed[h]]])
    keep = np.asarray(keep, dtype=np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")[:width]]


def null_sequences(lm: WordLM, n_words: int, n_sequences: int, extensions: int = 5,
                   proposal: ProposalConfig = ProposalConfig(), seed: int = 0) -> list[list[str]]:
    """Brain-free LM word sequences (Tang's null): the same proposal machinery with random scores, beam width
    `2 * extensions` per sequence. All sequences share one batch (one LM call per word for all of them).
    Returns `n_sequences` lists of `n_words` words."""
    rng = np.random.default_rng(seed)
    width = 2 * extensions
    filt = ContextFilter()
    beam = Beam(np.zeros((n_sequences, 0), dtype=np.int64), np.zeros(n_sequences), np.zeros((n_sequences, 0)),
                lm.start([[] for _ in range(n_sequences)]), {"group": np.arange(n_sequences)})
    for _ in range(n_words):
        owners, flat = candidate_pool(lm, beam, proposal, filt)
        scores = rng.random(len(flat))
        chosen = []
        for g in range(n_sequences):  # each sequence is its own beam
            rows = np.flatnonzero(beam.extra["group"] == g)
            allowed = np.zeros(len(beam), dtype=int)
            allowed[rows] = extension_counts(beam.lm_logprob[rows], extensions)
            mine = np.flatnonzero(np.isin(owners, rows))
            chosen.append(mine[select_pool(scores[mine], owners[mine], allowed, width)])
        chosen = np.concatenate(chosen)
        beam = grow(lm, beam, owners[chosen], [flat[c][0] for c in chosen], [flat[c][1] for c in chosen])
    best = [np.flatnonzero(beam.extra["group"] == g)[0] for g in range(n_sequences)]
    return [[lm.vocab.words[w] for w in beam.words[r]] for r in best]
