"""Variants of a tuned Bayesian decoder on its run's validation split (never test): the encoding-guided search's
widths, retrieval-seeded candidates and a length-contrast pick, against the tuned decoder's own sampled candidates.

On a run whose decoder `brainllm tune-decoder` chose (its temperature, number of candidates, λ), prints the mean
validation BLEU-1 (`decoder_tuning.bleu1`, the tuner's own) and MiniLM cosine similarity of the MAP picks under the
true frames, PerBrainLLM's (frames deranged across validation samples, their own candidates) and the
length/position decoder's. The encoding models are refitted here on the training samples alone, with the run's
chosen settings (`tune-decoder` refits its stored ones on training + validation, which would read the validation
frames the picks are scored on):
  * `sampled`: the tuned decoder's candidates alone, at each λ of `--weights`;
  * `guided W`: the same plus the texts of a `W`-beam encoding-guided search at the run's λ (`decoding.guided`; the
    permuted and length/position decoders run their own searches), with the seconds one search of the true frames
    took;
  * `seeded K`: the sampled candidates plus the retrieval-seeded ones (`decoding.seeded`: K training sentences
    retrieved per decoder with its own frames and model, `generation.seeded_draws` draws), at each λ, with the
    seconds the true frames' seeding took; `seeded K alone`: the run's search result and the seeded texts only;
  * `contrast`: the sampled candidates picked by the encoding model's log-likelihood minus the length/position
    model's (what the frames say beyond length and position), at each λ, with the picks' mean length in words.

    .venv/bin/python benchmarks/valid_variants.py RUN [--guided-beams 4 8 16] [--seeded 3] [--weights 1 3 10 30 100 300]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from _common import host_info, print_table, write_json
from brainllm.decoding.bayes import encoding_scores, score_candidates, seeded_texts, with_guided
from brainllm.decoding.encoding_choice import validation_scorers
from brainllm.decoding.retrieval import retrieval_pool
from brainllm.evaluation.semantic import MiniLMScorer
from brainllm.experiments.decoder_tuning import bleu1
from brainllm.model.collate import permute_frames
from brainllm.runs import RunPaths, load_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--guided-beams", type=int, nargs="*", default=[4, 8, 16])
    parser.add_argument("--seeded", type=int, nargs="*", default=[3])
    parser.add_argument("--weights", type=float, nargs="*", default=[1, 3, 10, 30, 100, 300])
    args = parser.parse_args()
    run = load_run(args.run)
    cfg = replace(run.config.generation, guided_beams=0, seeded_sentences=0)
    if cfg.rerank != "encoding":
        raise SystemExit(f"{args.run} has no tuned Bayesian decoder: run `brainllm tune-decoder {args.run}` first.")
    scorer, nuisance = validation_scorers(run)
    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    permuted = permute_frames(valid, cfg.seed)
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    store = RunPaths(run.path).candidates("valid_variants")  # the sampled candidates, kept for a rerun
    own = score_candidates(run, valid, "brain", cfg, scorer, store=store)
    other = score_candidates(run, permuted, "brain", cfg, scorer, store=store)
    by_nuisance = own.rescored(encoding_scores(run, nuisance, valid, own.texts))
    length = {name: [np.asarray(n) for n in encoding_scores(run, nuisance, ss, c.texts)]
              for name, ss, c in (("own", valid, own), ("other", permuted, other))}
    contrast = [c.rescored([e - n for e, n in zip(c.encoding, length[name])])
                for name, c in (("own", own), ("other", other))]

    minilm = MiniLMScorer()

    def row(variant: str, weight: float, sets, seconds: float | None = None, n_candidates: int | None = None
            ) -> dict:
        picks = [c.picks(weight, n_candidates) for c in sets]
        b = [float(bleu1(p, refs).mean()) for p in picks]
        m = [float(minilm.cosine(p, refs).mean()) for p in picks]
        words = float(np.mean([len(t.split()) for t in picks[0]]))
        return {"variant": variant, "weight": weight, "bleu1": round(b[0], 4), "bleu1_permuted": round(b[1], 4),
                "bleu1_nuisance": round(b[2], 4), "minilm": round(m[0], 4), "minilm_permuted": round(m[1], 4),
                "minilm_nuisance": round(m[2], 4), "words": round(words, 1),
                "seconds": None if seconds is None else round(seconds, 1)}

    rows = [row("sampled", w, (own, other, by_nuisance)) for w in args.weights]
    rows += [row("contrast", w, (*contrast, by_nuisance)) for w in args.weights]
    for beams in args.guided_beams:
        g = replace(cfg, guided_beams=beams)
        start = time.perf_counter()
        first = with_guided(run, valid, "brain", g, scorer, own, desc=f"guided {beams}")
        seconds = time.perf_counter() - start
        sets = (first, with_guided(run, permuted, "brain", g, scorer, other, desc=f"guided {beams} permuted"),
                with_guided(run, valid, "brain", g, nuisance, by_nuisance, desc=f"guided {beams} nuisance"))
        rows.append(row(f"guided {beams}", cfg.encoding_weight, sets, seconds))
    pool = retrieval_pool(run, ("train",))
    for k in args.seeded:
        s_cfg = replace(cfg, seeded_sentences=k)
        start = time.perf_counter()
        first = own.extended(run.encoder.decode, *seeded_texts(run, valid, "brain", s_cfg, scorer, pool))
        seconds = time.perf_counter() - start
        sets = (first, other.extended(run.encoder.decode, *seeded_texts(run, permuted, "brain", s_cfg, scorer, pool)),
                by_nuisance.extended(run.encoder.decode, *seeded_texts(run, valid, "brain", s_cfg, nuisance, pool)))
        rows += [row(f"seeded {k}", w, sets, seconds if w == args.weights[0] else None) for w in args.weights]
        rows += [row(f"seeded {k} alone", w, sets, None, 1) for w in args.weights]
    print(f"{args.run}: validation, {len(valid)} samples; tuned decoder t {cfg.temperature}, {cfg.n_candidates} "
          f"candidates, λ {cfg.encoding_weight}")
    print_table(rows, ["variant", "weight", "bleu1", "bleu1_permuted", "bleu1_nuisance", "minilm", "minilm_permuted",
                       "minilm_nuisance", "words", "seconds"])
    print(f"wrote {write_json('valid_variants', {'host': host_info(), 'run': args.run, 'rows': rows})}")


if __name__ == "__main__":
    main()
