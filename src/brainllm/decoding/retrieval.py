"""The retrieval baseline (beyond the paper): look the text up instead of generating it.

Each sample's output is the continuation, among those of the samples the run's encoding model was fitted on
(`scorer_splits`: training, and validation when refitted), under which the encoding model finds the sample's frames
likeliest: log p(frames | prompt + text), each text read with the sample's own prompt, passage context (if the
model reads one) and position (or, for a decoder that picks by `pool-mbr`, the pool text that rule chooses among
the likeliest: `pool_mbr.lookup_index`, so that the two decide alike). No LM takes part. It is nearest-neighbour
decoding in the encoding model's frame space, so a report can say whether BrainLLM's generation adds anything to
looking up a sentence seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model import EncodedSample
from ..model.text_features import full_text, mean_states_after_prefix
from ..runs import LoadedRun
from .encoding_model import SentenceScorer, positions_of, scorer_splits
from .pool_mbr import PoolMBR, SentenceVectors, lookup_index


def retrieval_pool(run: LoadedRun, splits: Sequence[str] | None = None) -> list[str]:
    """The distinct continuations of the samples of `splits` (default: those the run's encoding model was fitted
    on, `scorer_splits`), sorted."""
    ids = [i for split in (scorer_splits(run) if splits is None else splits) for i in run.split.ids(split)]
    return sorted({run.dataset.by_id(i).continuation.strip() for i in ids})


def pool_or_default(run: LoadedRun, pool: Sequence[str] | None) -> list[str]:
    """`pool` as a list (None: `retrieval_pool`); a `ValueError` when it is empty."""
    pool = list(retrieval_pool(run) if pool is None else pool)
    if not pool:
        raise ValueError("The retrieval pool is empty: the encoding model's splits hold no sample.")
    return pool


def retrieval_scores(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample],
                     pool: Sequence[str]) -> np.ndarray:
    """`(n_samples, n_pool)`: log p(frames of sample i | prompt_i + pool text j) up to a constant per sample.

    Samples that share a prompt and a context (all of them in the sentence task) share the pool's backbone states:
    one pass over the pool per distinct (prompt, context), not one per sample."""
    prompts = [run.dataset.by_id(s.id).prompt for s in samples]
    contexts = scorer.contexts(samples)
    positions = positions_of(run, samples)
    frames = scorer.frames(samples)
    layer = scorer.choice.layer
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault((prompt, None if contexts is None else contexts[i]), []).append(i)
    keys = list(groups)
    states: list[np.ndarray | None] = [None] * len(keys)
    if layer is not None:
        states = mean_states_after_prefix(run.model.backbone, run.encoder, [p for p, _ in keys],
                                          [pool] * len(keys), layer,
                                          None if contexts is None else [c for _, c in keys],
                                          bare=run.model.bare_backbone())
    out = np.zeros((len(samples), len(pool)))
    for key, group_states in zip(keys, states):
        texts = [full_text(key[0], t) for t in pool]
        for i in groups[key]:
            out[i] = scorer.states_log_likelihood(group_states, texts, [positions[i]] * len(pool),
                                                  np.repeat(frames[i:i + 1], len(pool), axis=0))
    return out


def retrieve(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample],
             pool: Sequence[str] | None = None, rule: PoolMBR | None = None) -> list[str]:
    """Per sample, the pool text (default `retrieval_pool`) under which its frames are likeliest, or with `rule`,
    the one `pool_mbr.lookup_index` chooses."""
    pool = pool_or_default(run, pool)
    scores = retrieval_scores(run, scorer, samples, pool)
    if rule is None:
        return [pool[int(k)] for k in np.argmax(scores, axis=1)]
    vectors = SentenceVectors()
    return [pool[lookup_index(pool, row, rule, vectors)] for row in scores]
