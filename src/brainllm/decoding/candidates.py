"""Candidate continuations for the Bayesian decoder (beyond the paper): the run's own search result plus nucleus draws
from BrainLLM, with each one's log p_LM. The prefix sampler (`prefix_sample`) draws them from one pass over each
sample's prefix and keeps log p_LM as it draws; HF `generate` plus a teacher-forced pass is the reference.
`propose_stored` keeps them in a file as they are proposed, so a killed run resumes and a condition that decodes the
same frames proposes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..config import GenerationConfig
from ..io import file_sha1, read_json, write_json
from ..model import Collator, EncodedSample
from ..model.precision import cast_parameters, inference_dtype
from ..progress import progress
from ..runs import LoadedRun, RunPaths
from .mbr import mbr_index, similarity_matrix
from .prefix_sample import SampleSettings, draw_uniforms, sample_from_prefix
from .sentences import decode_ids, decoding_kwargs, length_sorted_batches, teacher_forced_losses

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    """Candidate continuations of each sample and their two scores.

    Attributes:
        ids: per sample, the token ids of each candidate (candidate 0 = the run's own search result).
        texts: per sample, the decoded text of each candidate.
        lm: per sample, `(n_c,)` summed log p_LM(candidate + EOS | prompt, frames), nats.
        encoding: per sample, `(n_c,)` log p(frames | prompt + candidate) (up to a constant per sample).
        draws: per sample, `(n_c,)` how many of the nucleus samples came out as each candidate (the search result
            counts only when a sample repeats it): the Monte Carlo weights of `posterior_losses`' normaliser.
        proposed: per sample, how many of its candidates `propose` gave (the search result and the draws); those
            after them (the encoding-guided search's texts, `extended`) join every pick. None: all proposed.
    """

    ids: list[list[list[int]]]
    texts: list[list[str]]
    lm: list[np.ndarray]
    encoding: list[np.ndarray] = field(default_factory=list)
    draws: list[np.ndarray] = field(default_factory=list)
    proposed: list[int] | None = None
    _similarity: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def pick(self, weight: float, n_candidates: int | None = None, rule: str = "map") -> list[int]:
        """Index of the chosen candidate of each sample among its first `n_candidates`, under the score
        lm + weight·encoding: its highest (`map`), or the minimum-Bayes-risk choice under the posterior that score
        defines (`mbr`: `mbr.mbr_index`). `pool-mbr` needs the training sentences' scores: `pool_mbr.PoolMBRPicker`."""
        if rule not in ("map", "mbr"):
            raise ValueError(f"Candidates.pick takes the map or mbr rule, not {rule!r} (pool-mbr: PoolMBRPicker).")
        out = []
        for i, (lm, enc) in enumerate(zip(self.lm, self.encoding)):
            pool = self.considered(i, n_candidates)
            score = lm[pool] + weight * enc[pool]
            best = mbr_index(self.similarity(i)[np.ix_(pool, pool)], score) if rule == "mbr" else np.argmax(score)
            out.append(int(pool[best]))
        return out

    def considered(self, i: int, n_candidates: int | None) -> np.ndarray:
        """Sample i's candidates a pick chooses among: its first `n_candidates` proposed ones (all for None) and
        every later (guided) one that repeats none before it."""
        proposed = len(self.lm[i]) if self.proposed is None else self.proposed[i]
        k = proposed if n_candidates is None else min(n_candidates, proposed)
        seen = {tuple(c) for c in self.ids[i][:k]}
        extra = []
        for j in range(proposed, len(self.lm[i])):
            if tuple(self.ids[i][j]) not in seen:
                seen.add(tuple(self.ids[i][j]))
                extra.append(j)
        return np.array(list(range(k)) + extra, dtype=np.int64)

    def extended(self, decode, ids: Sequence[Sequence[Sequence[int]]], lm: Sequence[np.ndarray],
                 encoding: Sequence[np.ndarray] | None = None) -> "Candidates":
        """These candidates and, after each sample's own, the texts `ids` with their log p_LM `lm` and, when these
        are scored, their `encoding` scores (the encoding-guided search's: `bayes.guided_texts`; `decode` gives a
        text of token ids), drawn by no sampler (`draws` 0)."""
        if bool(self.encoding) != (encoding is not None):
            raise ValueError("extend scored candidates with scored texts, unscored ones with unscored texts.")
        return Candidates([list(a) + [list(c) for c in b] for a, b in zip(self.ids, ids)],
                          [list(a) + [decode(c) for c in b] for a, b in zip(self.texts, ids)],
                          [np.concatenate([a, np.asarray(b, dtype=np.float64)]) for a, b in zip(self.lm, lm)],
                          [] if encoding is None else [np.concatenate([a, b]) for a, b in zip(self.encoding, encoding)],
                          [np.concatenate([d, np.zeros(len(b), dtype=d.dtype)]) for d, b in zip(self.draws, ids)],
                          [len(a) for a in self.ids] if self.proposed is None else self.proposed)

    def similarity(self, i: int) -> np.ndarray:
        """`(n_c, n_c)` the MBR similarity between sample i's candidates (`mbr.similarity_matrix`), computed once."""
        if i not in self._similarity:
            self._similarity[i] = similarity_matrix(self.texts[i])
        return self._similarity[i]

    def rescored(self, encoding: list[np.ndarray]) -> "Candidates":
        """The same candidates under other encoding scores (another encoding model's), sharing their MBR
        similarities, which depend on the texts alone."""
        out = replace(self, encoding=encoding)
        out._similarity = self._similarity
        return out

    def picks(self, weight: float, n_candidates: int | None = None, rule: str = "map") -> list[str]:
        """The text `pick` chooses for each sample."""
        return [texts[k] for texts, k in zip(self.texts, self.pick(weight, n_candidates, rule))]


def propose(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
            desc: str = "propose") -> Candidates:
    """Candidate continuations of each sample, without their encoding scores: the search of `cfg` (beam/greedy)
    first, then `cfg.n_candidates − 1` nucleus draws (top_p `cfg.candidate_top_p`, temperature `cfg.temperature`),
    duplicates merged into `draws`, and each one's log p_LM. `cfg.sampler` "prefix" draws from each prefix's KV cache
    with its uniforms seeded by the sample id (`prefix_sample`), keeping log p_LM as it draws; "hf" is the
    reference: HF `generate(num_return_sequences=…)` seeded per batch, then a teacher-forced pass."""
    collate = Collator(run.dataset.frames, run.encoder, layout, for_generation=True,
                       tokens_per_frame=run.model.adapter.tokens_per_frame)
    search = replace(cfg, rerank="none")
    prefix = cfg.sampler == "prefix" and cfg.n_candidates > 1
    greedy = prefix and greedy_in_sampler(cfg)  # the sampler's pass runs the greedy search as one more row
    with cast_parameters(run.model.backbone, sampling_dtype(run, cfg)):
        if greedy:
            ids = [[] for _ in samples]
        else:
            best = decode_ids(run.model, collate, samples, search, run.encoder, desc=f"{desc}/search")
            ids = [[_cut(seq, run.encoder.eos_id)] for seq in best]
        draws = [[0] for _ in ids]
        if not prefix:
            _sample_hf(run, samples, collate, cfg, ids, draws, desc)
            lm = lm_scores(run, samples, ids, layout, cfg.batch_size)
        else:
            lm = _sample_prefix(run, samples, collate, cfg, ids, draws, desc, greedy)
    texts = [[run.encoder.decode(c) for c in cands] for cands in ids]
    return Candidates(ids, texts, lm, draws=[np.array(d) for d in draws])


def _add_draw(ids: list[list[int]], draws: list[int], draw: list[int]) -> bool:
    """Count `draw` among a sample's candidates `ids` (and their `draws`); True when it is new (appended)."""
    if draw in ids:
        draws[ids.index(draw)] += 1
        return False
    ids.append(draw)
    draws.append(1)
    return True


def _sample_prefix(run: LoadedRun, samples: Sequence[EncodedSample], collate: Collator, cfg: GenerationConfig,
                   ids: list[list[list[int]]], draws: list[list[int]], desc: str, greedy: bool = False
                   ) -> list[np.ndarray]:
    """`propose`'s draws from each prefix's KV cache, appended to `ids` and `draws` in place (each sample's search
    result first, forced along with the draws for its log p_LM; with `greedy`, `ids` still empty, the greedy search
    run in the same pass and put first). Returns each sample's log p_LM per candidate."""
    settings = SampleSettings(n=cfg.n_candidates - 1, max_new_tokens=cfg.max_new_tokens,
                              min_new_tokens=cfg.min_new_tokens, eos_id=run.encoder.eos_id,
                              top_p=cfg.candidate_top_p, temperature=cfg.temperature)
    device = run.model.boundary.device
    lm: list[list[float]] = [[] for _ in samples]
    batches = length_sorted_batches([collate.length(s) for s in samples], cfg.batch_size)
    for rows in progress(batches, f"{desc}/sample", unit="batch"):
        batch = collate([samples[j] for j in rows]).to(device)
        embeds, context = run.model.generation_inputs(batch)
        uniforms = [draw_uniforms(cfg.seed, samples[j].id, settings) for j in rows]
        drawn = sample_from_prefix(run.model.backbone, embeds, batch.attention_mask, settings, uniforms, context,
                                   forced=None if greedy else [ids[j][0] for j in rows], greedy=greedy)
        for j, got in zip(rows, drawn):
            if greedy:
                ids[j].append(got.forced_ids)
            lm[j].append(got.forced_log_prob)
            for draw, log_prob in zip(got.ids, got.log_probs):
                if draw and _add_draw(ids[j], draws[j], draw):
                    lm[j].append(float(log_prob))
    return [np.array(x) for x in lm]


def greedy_in_sampler(cfg: GenerationConfig) -> bool:
    """Whether the prefix sampler runs the search itself, as its extra row: a greedy search by the prefix decoder
    with no repetition penalty takes each step's most probable token, which the sampler's pass computes anyway."""
    one_beam = cfg.method == "greedy" or (cfg.method == "beam" and cfg.num_beams == 1)
    return one_beam and cfg.decoder == "prefix" and cfg.repetition_penalty == 1.0


def sampling_dtype(run: LoadedRun, cfg: GenerationConfig) -> torch.dtype:
    """The float type the Bayesian decoder's search and prefix sampler run in and the candidates' encoding states
    are computed in (`cfg.precision` on the run's device, `model.precision`); the reference sampler, and a decoder
    with no draws, stay in the run's own."""
    if cfg.sampler != "prefix" or cfg.n_candidates <= 1:
        return run.model.backbone_dtype
    return inference_dtype(cfg.precision, run.model.boundary.device)


def _sample_hf(run: LoadedRun, samples: Sequence[EncodedSample], collate: Collator, cfg: GenerationConfig,
               ids: list[list[list[int]]], draws: list[list[int]], desc: str) -> None:
    """`propose`'s draws by HF `generate` (the reference sampler), appended to `ids` and `draws` in place."""
    n_sampled = cfg.n_candidates - 1
    if n_sampled <= 0:
        return
    # plain nucleus sampling: no repetition penalty, whatever the search uses
    sampler = replace(cfg, rerank="none", method="sample", top_p=cfg.candidate_top_p, repetition_penalty=1.0)
    kwargs = decoding_kwargs(sampler, run.encoder) | {"num_return_sequences": n_sampled}
    device = run.model.boundary.device
    batches = length_sorted_batches([collate.length(s) for s in samples], cfg.batch_size)
    for b, rows in enumerate(progress(batches, f"{desc}/sample", unit="batch")):
        torch.manual_seed(cfg.seed * 100003 + b)
        seqs = run.model.generate(collate([samples[j] for j in rows]).to(device), **kwargs)
        for k, j in enumerate(rows):
            for seq in seqs[k * n_sampled:(k + 1) * n_sampled]:
                cut = _cut(seq, run.encoder.eos_id)
                if cut:
                    _add_draw(ids[j], draws[j], cut)


def _cut(ids: Sequence[int], eos: int) -> list[int]:
    ids = list(ids)
    return ids[: ids.index(eos)] if eos in ids else ids


def lm_scores(run: LoadedRun, samples: Sequence[EncodedSample], candidates: Sequence[Sequence[Sequence[int]]],
              layout: str, batch_size: int) -> list[np.ndarray]:
    """Summed log p_LM(candidate + EOS | prompt, frames) per candidate of each sample (teacher-forced, nats)."""
    flat = [(i, list(c)) for i, cands in enumerate(candidates) for c in cands]
    pairs = [replace(samples[i], continuation_ids=tuple(c)) for i, c in flat]
    mean_ce = teacher_forced_losses(run, pairs, layout, batch_size)
    return regroup(-mean_ce * np.array([len(c) + 1 for _, c in flat]), candidates)


def regroup(flat: np.ndarray, groups: Sequence[Sequence[object]]) -> list[np.ndarray]:
    """`flat` values (one per item of every group, in order) back into one array per group."""
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def candidate_settings(run: LoadedRun, layout: str, cfg: GenerationConfig) -> dict:
    """What a sample's candidates depend on besides its frames: the trained adapter (its file's SHA-1), the input
    layout, the search and sampling settings and the float type drawn in (`sampling_dtype`: `auto` may resolve
    otherwise on another host). Stored candidates are reused only under the same."""
    keys = ("method", "num_beams", "repetition_penalty", "min_new_tokens", "max_new_tokens", "temperature",
            "seed", "n_candidates", "candidate_top_p", "sampler", "decoder")
    return {"adapter_sha1": file_sha1(RunPaths(run.path).adapter), "layout": layout,
            "dtype": str(sampling_dtype(run, cfg))} | {k: getattr(cfg, k) for k in keys}


def propose_stored(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                   path: Path, desc: str = "propose", chunk: int | None = None) -> Candidates:
    """`propose`, keeping the candidates in `path` (JSON, rewritten atomically after every `chunk` samples,
    default 4 batches) under their sample's id and frames: a sample already there under the same
    `candidate_settings` is read back, not proposed again. So a killed `generate` loses at most one chunk, and a
    condition that decodes the same frames (the length/position decoder re-picks the brain condition's
    candidates) proposes nothing."""
    settings = candidate_settings(run, layout, cfg)
    stored = read_json(path) if path.exists() else {}
    entries: dict = stored.get("samples", {}) if stored.get("settings") == settings else {}
    keys = [f"{s.id}@{','.join(map(str, s.frame_rows))}" for s in samples]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)  # a sample decoded twice with the same frames (two derangements) is proposed once
    todo = [i for key, i in first.items() if key not in entries]
    chunk = chunk or 4 * cfg.batch_size
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        got = propose(run, [samples[i] for i in part], layout, cfg, desc)
        for i, ids, lm, draws in zip(part, got.ids, got.lm, got.draws):
            entries[keys[i]] = {"ids": ids, "lm": [float(x) for x in lm], "draws": [int(d) for d in draws]}
        write_json(path, {"settings": settings, "samples": entries})
        log.info("%s: candidates of %d/%d samples stored in %s", desc, start + len(part), len(todo), path)
    ids = [entries[k]["ids"] for k in keys]
    return Candidates(ids, [[run.encoder.decode(c) for c in cands] for cands in ids],
                      [np.array(entries[k]["lm"]) for k in keys], draws=[np.array(entries[k]["draws"]) for k in keys])
