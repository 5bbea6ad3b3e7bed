"""Validation-only comparison of pick rules on trained sentence-task runs (reads no test sample): the run's own
tuned pick (MAP or MBR at its λ), `pool-mbr` at several meaning weights, and the retrieval baseline by argmax and by
the same pool-mbr rule, each under the true frames, PerBrainLLM's permuted frames and the length/position model.

The encoding models are refitted on training samples only (as `tune-decoder` scores validation before its refit),
the candidates are the run's tuned ones (its temperature, its number of draws, its retrieval seeds), kept in
RUN/predictions/<--store>_candidates.json. Metrics: `bleu1_per_sample` and MiniLM cosine against the references,
means over the validation samples of each run and of all runs together.

    .venv/bin/python benchmarks/pool_mbr_validation.py RUN[:STORE]... [--store valid_variants] [--meaning 0.3 0.7 1.0]

(RUN:STORE reads that run's candidates from another file than --store's.)
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from brainllm.decoding.bayes import encoding_scores, score_candidates, seeded_texts
from brainllm.decoding.encoding_choice import validation_scorers
from brainllm.decoding.pool_mbr import PoolMBR, PoolMBRPicker, SentenceVectors, lookup_index
from brainllm.decoding.retrieval import retrieval_pool, retrieval_scores
from brainllm.experiments.decoder_tuning import bleu1
from brainllm.model.collate import permute_frames
from brainllm.runs import RunPaths, load_run

DECODERS = ("brain", "permuted", "length/position")


def run_rows(path: str, store: str, meanings: list[float], vectors: SentenceVectors) -> dict[str, list[tuple]]:
    """Per rule, per decoder: (per-sample BLEU-1, per-sample MiniLM cosine) on the run's validation samples."""
    run = load_run(path)
    cfg = run.config.generation
    scorer, nuisance = validation_scorers(run)
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    permuted = permute_frames(valid, cfg.seed)
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    ref_vectors = vectors(refs)
    drawn = replace(cfg, guided_beams=0, seeded_sentences=0)
    stored = RunPaths(run.path).candidates(store)
    own = score_candidates(run, valid, "brain", drawn, scorer, store=stored)
    other = score_candidates(run, permuted, "brain", drawn, scorer, store=stored)
    by_nuisance = own.rescored(encoding_scores(run, nuisance, valid, own.texts))
    pool = retrieval_pool(run, ("train",))
    decoders = ((valid, scorer, own), (permuted, scorer, other), (valid, nuisance, by_nuisance))
    sets, pool_scores = [], []
    for samples, sc, cands in decoders:
        if cfg.seeded_sentences:
            cands = cands.extended(run.encoder.decode, *seeded_texts(run, samples, "brain", cfg, sc, pool))
        sets.append(cands)
        pool_scores.append(retrieval_scores(run, sc, samples, pool))

    def scored(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return bleu1(texts, refs), (vectors(texts) * ref_vectors).sum(1)

    rows: dict[str, list[tuple]] = {}
    λ = cfg.encoding_weight
    print(f"{path}: the run's own pick is {cfg.pick} at λ {λ:g}")
    rows["run's own pick (its rule and λ)"] = [scored(c.picks(λ, rule=cfg.pick if cfg.pick != "pool-mbr" else "map"))
                                               for c in sets]
    pickers = [PoolMBRPicker(c, pool, s, cfg.pool_mbr_top, vectors) for c, s in zip(sets, pool_scores)]
    for meaning in meanings:
        rule = PoolMBR(cfg.pool_mbr_beta, cfg.pool_mbr_top, meaning)
        rows[f"pool-mbr, meaning weight {meaning:g}"] = [scored(p.picks(rule)) for p in pickers]
    rows["retrieval (argmax)"] = [scored([pool[int(k)] for k in s.argmax(1)]) for s in pool_scores]
    for meaning in meanings:
        rule = PoolMBR(cfg.pool_mbr_beta, cfg.pool_mbr_top, meaning)
        rows[f"retrieval by pool-mbr, meaning weight {meaning:g}"] = [
            scored([pool[lookup_index(pool, row, rule, vectors)] for row in s]) for s in pool_scores]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN or RUN:STORE")
    parser.add_argument("--store", default="valid_variants", help="candidates file name under RUN/predictions/")
    parser.add_argument("--meaning", type=float, nargs="+", default=[0.3, 0.7, 1.0])
    args = parser.parse_args()
    vectors = SentenceVectors()
    pooled: dict[str, list[list[tuple]]] = {}
    for spec in args.runs:
        path, _, store = spec.partition(":")
        rows = run_rows(path, store or args.store, args.meaning, vectors)
        print(f"\n{path} (validation, {len(rows[next(iter(rows))][0][0])} samples): BLEU-1 / MiniLM")
        for name, per_decoder in rows.items():
            pooled.setdefault(name, []).append(per_decoder)
            print(f"  {name:44s} " + "  ".join(f"{d} {b.mean():.3f} / {m.mean():.3f}"
                                                for d, (b, m) in zip(DECODERS, per_decoder)))
    print(f"\nall runs together ({len(args.runs)} runs): BLEU-1 / MiniLM")
    for name, runs in pooled.items():
        cells = []
        for d in range(len(DECODERS)):
            b = np.concatenate([r[d][0] for r in runs])
            m = np.concatenate([r[d][1] for r in runs])
            cells.append(f"{DECODERS[d]} {b.mean():.3f} / {m.mean():.3f}")
        print(f"  {name:44s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
