"""Retrieval-seeded candidates for the Bayesian decoder (beyond the paper): the frames pick training sentences,
BrainLLM writes new ones on their topic.

BrainLLM's own draws reach a sentence's length and position but little of its content (docs/results.md), while
the encoding model, looking sentences up, finds their topic (`retrieval`). Here the two meet: for each sample the
`k` training sentences under which the encoding model finds the sample's frames likeliest (`retrieval_scores`,
with the decoder's own scorer and the frames the sample is given: a control's permuted frames, the
length/position model for the nuisance control) are put in front of the sample's prompt, likeliest last, and
BrainLLM (the same adapter, the same frames) draws continuations of that text. Each draw is cut at its first
sentence end and read back as a continuation of the sample's *own* prompt: its log p_LM is the adapter-conditioned
LM's under that prompt, without the retrieved text (the decoder's prior stays BrainLLM's), and it is scored by the
encoding model like every candidate (`bayes`). The texts join the candidates after the sampled ones
(`Candidates.extended`), as the encoding-guided search's do. No retrieved sentence is itself a candidate: the
output is always written by the LM (it may repeat a retrieved sentence; `docs/results.md` says how often).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..config import GenerationConfig
from ..model import EncodedSample
from ..model.precision import cast_parameters
from ..model.text_features import full_text
from ..runs import LoadedRun
from .candidates import lm_scores, propose, sampling_dtype
from .encoding_model import SentenceScorer
from .retrieval import pool_or_default, retrieval_scores

#: a sentence ends at . ! or ? (closing quotes or brackets after it kept) followed by a space or the end
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def first_sentence(text: str) -> str:
    """`text` up to and including its first sentence end (all of it when it has none), stripped."""
    found = _SENTENCE_END.search(text)
    return (text[:found.end()] if found else text).strip()


def retrieved_prompts(run: LoadedRun, samples: Sequence[EncodedSample], scorer: SentenceScorer, k: int,
                      pool: Sequence[str]) -> list[str]:
    """Per sample, the text BrainLLM continues: the `k` pool sentences under which `scorer` finds the sample's
    frames likeliest (likeliest last, nearest the continuation), then the sample's own prompt."""
    scores = retrieval_scores(run, scorer, samples, pool)
    out = []
    for s, row in zip(samples, scores):
        best = np.argsort(-row, kind="stable")[:k][::-1]
        out.append(full_text(" ".join(pool[j] for j in best), run.dataset.by_id(s.id).prompt))
    return out


def seeded_proposals(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                     scorer: SentenceScorer, pool: Sequence[str] | None = None, desc: str = "seeded"
                     ) -> tuple[list[list[list[int]]], list[np.ndarray]]:
    """The retrieval-seeded texts of each sample (module docstring): `cfg.seeded_sentences` sentences of `pool`
    (default `retrieval.retrieval_pool`: those the run's encoding model was fitted on) retrieved by `scorer`, then
    the search and `cfg.seeded_draws` nucleus draws of BrainLLM at `cfg.temperature`, each cut at its first sentence
    end, repeats and empty texts dropped.

    Returns per sample the texts' token ids as continuations of the sample's own prompt and `(n,)` their summed
    log p_LM(ids + EOS | own prompt, frames), in `candidates.sampling_dtype`."""
    prompts = retrieved_prompts(run, samples, scorer, cfg.seeded_sentences, pool_or_default(run, pool))
    seeded = [replace(s, prompt_ids=tuple(run.encoder.text_ids(p))) for s, p in zip(samples, prompts)]
    drawn = propose(run, seeded, layout, replace(cfg, n_candidates=cfg.seeded_draws + 1),
                    f"{desc}/draw")
    ids: list[list[list[int]]] = []
    for s, texts in zip(samples, drawn.texts):
        own = run.dataset.by_id(s.id).prompt
        kept = list(dict.fromkeys(t for t in map(first_sentence, texts) if t))
        ids.append([run.encoder.split_ids(own, t)[1] for t in kept])
    with cast_parameters(run.model.backbone, sampling_dtype(run, cfg)):
        lm = lm_scores(run, samples, ids, layout, cfg.batch_size)
    return ids, lm
